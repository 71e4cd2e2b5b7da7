"""`reproduce`: the dense-model cache and the regularizer-free fine-tuning copy."""

import keras
import numpy as np
import pytest

from deephoyer_tf.paper import reproduce
from deephoyer_tf.paper.datasets import MnistSplits


def _splits(seed):
    rng = np.random.default_rng(seed)

    def images(n):
        return rng.normal(size=(n, 28, 28, 1)).astype("float32")

    def labels(n):
        return rng.integers(0, 10, n)

    return MnistSplits(images(64), labels(64), images(16), labels(16), images(16), labels(16), 0.0, 1.0)


def test_the_dense_cache_is_keyed_by_the_data(tmp_path):
    """Before: a Fashion-MNIST run after an MNIST run reused the MNIST model."""
    recipe = reproduce.recipe_for("lenet-300-100", "hs", pretrain_epochs=1, batch_size=32)
    logs = []
    first, epochs_first = reproduce.pretrained("lenet-300-100", _splits(0), recipe, tmp_path, logs.append)
    other, epochs_other = reproduce.pretrained("lenet-300-100", _splits(1), recipe, tmp_path, logs.append)
    again, epochs_again = reproduce.pretrained("lenet-300-100", _splits(0), recipe, tmp_path, logs.append)
    assert (epochs_first, epochs_other, epochs_again) == (1, 1, 0)  # trained, trained, reused
    assert len(list(tmp_path.glob("*.keras"))) == 2
    for got, want in zip(again.get_weights(), first.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert not all(np.array_equal(a, b) for a, b in zip(other.get_weights(), first.get_weights()))
    assert reproduce.data_fingerprint(_splits(0).x_train, _splits(0).y_train) != reproduce.data_fingerprint(
        _splits(1).x_train, _splits(1).y_train
    )


def test_fine_tuning_copy_drops_every_registered_weight_regularizer():
    """Before: four hard-coded attribute names, `embeddings_regularizer` missed."""
    reg = keras.regularizers.L1(1.0)
    for layer in (
        keras.layers.Dense(2, kernel_regularizer=reg, bias_regularizer=reg),
        keras.layers.Embedding(10, 2, embeddings_regularizer=reg),
        keras.layers.SeparableConv2D(2, 3, depthwise_regularizer=reg, pointwise_regularizer=reg),
    ):
        copy = reproduce._without_regularizers(layer)
        config = copy.get_config()
        assert [k for k, v in config.items() if k.endswith("_regularizer") and v is not None] == []
        assert type(copy) is type(layer)


def test_an_unknown_dataset_is_rejected_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"^Invalid value for argument `dataset`\. Expected one of \['mnist', 'fashion-mnist'\]\. Received: dataset='cifar'$"):
        reproduce.run("lenet-300-100", "hs", output=tmp_path / "out", dataset="cifar")
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_fashion_mnist_runs_beside_mnist_without_sharing_the_dense_model(tmp_path, mnist_dir):
    import pathlib

    fashion_dir = pathlib.Path(mnist_dir).parent / "fashion-mnist"
    recipe = reproduce.recipe_for(
        "lenet-300-100", "hs", quick=True, train_subset=2000, std_ratio=0.1,
        regularize_epochs=1, finetune_epochs=1,
    )
    results = {}
    for name, folder in (("mnist", mnist_dir), ("fashion-mnist", str(fashion_dir))):
        results[name] = reproduce.run(
            "lenet-300-100", "hs", data_dir=folder, output=tmp_path / name, cache_dir=tmp_path / "cache",
            recipe=recipe, log=lambda *a: None, dataset=name,
        )
    assert results["mnist"]["dataset"] == "mnist" and results["mnist"]["paper"] is not None
    assert results["fashion-mnist"]["dataset"] == "fashion-mnist" and results["fashion-mnist"]["paper"] is None
    assert not results["fashion-mnist"]["pretrain_cached"]  # its own dense model, not MNIST's
    assert len(list((tmp_path / "cache").glob("*.keras"))) == 2
    # Fashion-MNIST is the harder set: the dense model is less accurate on it
    assert results["fashion-mnist"]["dense_test_accuracy"] < results["mnist"]["dense_test_accuracy"]
    assert "paper" not in reproduce.format_results(results["fashion-mnist"])
    assert 0.5 < results["fashion-mnist"]["test_accuracy"] <= 1.0
