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


@pytest.mark.slow
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


class _StopAt(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch`; records the epochs it sees."""

    def __init__(self, epoch=None):
        super().__init__()
        self.epoch, self.seen = epoch, []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _small_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"), keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 40)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


@pytest.mark.slow
def test_an_interrupted_fit_resumes_from_its_backup_to_the_same_weights(tmp_path):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)
    kwargs = dict(epochs=5, batch_size=16, shuffle=False, verbose=0, log=lambda *a: None)
    whole = _small_model()
    reproduce.fit_resumable(whole, x, y, **kwargs)

    model, stop = _small_model(), _StopAt(2)
    with pytest.raises(KeyboardInterrupt):
        reproduce.fit_resumable(model, x, y, backup_dir=tmp_path / "b", callbacks=[stop], **kwargs)
    assert stop.seen == [0, 1, 2]
    resumed, watch = _small_model(), _StopAt()  # a new process: fresh weights, fresh optimizer
    logs = []
    reproduce.fit_resumable(resumed, x, y, backup_dir=tmp_path / "b", done_path=tmp_path / "done.npz",
                            callbacks=[watch], **{**kwargs, "log": logs.append})
    assert watch.seen == [3, 4]  # epochs 0-2 were backed up
    assert "3 of 5 epochs done" in logs[0]
    # weights and optimizer state (the learning-rate schedule's step) were restored: same result
    for got, want in zip(resumed.get_weights(), whole.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert int(resumed.optimizer.iterations.numpy()) == 20
    # a completed stage is loaded, not trained again
    again, watch = _small_model(), _StopAt()
    assert reproduce.fit_resumable(again, x, y, done_path=tmp_path / "done.npz", callbacks=[watch], **kwargs) is False
    assert watch.seen == []
    for got, want in zip(again.get_weights(), resumed.get_weights()):
        np.testing.assert_array_equal(got, want)


@pytest.mark.slow
def test_the_dense_cache_key_holds_the_learning_rate_and_no_partial_file_is_left(tmp_path):
    logs = []
    for lr in (1e-3, 3e-3, 1e-3):
        recipe = reproduce.recipe_for("lenet-300-100", "hs", pretrain_epochs=1, batch_size=32, learning_rate=lr)
        reproduce.pretrained("lenet-300-100", _splits(0), recipe, tmp_path, logs.append)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert len(names) == 2 and all(n.endswith(".keras") and "partial" not in n for n in names)
    assert sum("reusing" in line for line in logs) == 1
    assert any("-lr0.003-" in n for n in names)


@pytest.mark.slow
def test_an_interrupted_reproduction_resumes_at_the_stage_it_was_in(tmp_path, monkeypatch):
    """Interrupted while choosing the threshold: the next run loads the regularized weights."""
    monkeypatch.setattr(reproduce.datasets, "load_dataset", lambda name, data_dir=None: _splits(0))
    recipe = reproduce.recipe_for("lenet-300-100", "hs", pretrain_epochs=1, regularize_epochs=2,
                                  finetune_epochs=1, warmup_epochs=1, batch_size=32,
                                  std_ratios=(0.1, 0.5), select_finetune_epochs=0)
    original = reproduce.select_std_ratio

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(reproduce, "select_std_ratio", interrupted)
    logs = []
    with pytest.raises(KeyboardInterrupt):
        reproduce.run("lenet-300-100", "hs", output=tmp_path / "out", cache_dir=tmp_path / "c",
                      recipe=recipe, log=logs.append)
    assert (tmp_path / "out" / "checkpoints" / "regularized.npz").exists()
    monkeypatch.setattr(reproduce, "select_std_ratio", original)
    logs.clear()
    results = reproduce.run("lenet-300-100", "hs", output=tmp_path / "out", cache_dir=tmp_path / "c",
                            recipe=recipe, log=logs.append)
    assert any(line.startswith("[regularize] done in an earlier run") for line in logs)
    assert any(line.startswith("[pretrain] reusing") for line in logs)
    assert results["std_ratio"] in (0.1, 0.5)
    assert not (tmp_path / "out" / "checkpoints").exists()  # complete: nothing left to resume
    # a changed recipe does not resume from another run's checkpoints
    (tmp_path / "out" / "checkpoints").mkdir()
    (tmp_path / "out" / "checkpoints" / "run.json").write_text("{}")
    (tmp_path / "out" / "checkpoints" / "regularized.npz").write_bytes(b"stale")
    logs.clear()
    reproduce.run("lenet-300-100", "hs", output=tmp_path / "out", cache_dir=tmp_path / "c", recipe=recipe,
                  log=logs.append)
    assert any("holds checkpoints of a different run" in str(line) for line in logs)


@pytest.mark.slow
@pytest.mark.parametrize("damage", ["truncate", "random"])
def test_a_damaged_cached_dense_model_is_trained_again_and_replaced(tmp_path, damage):
    """Before: a truncated or random-bytes cache entry gave Keras' "File not found" for a file that exists."""
    import os

    recipe = reproduce.recipe_for("lenet-300-100", "hs", pretrain_epochs=1, batch_size=32)
    first, _ = reproduce.pretrained("lenet-300-100", _splits(0), recipe, tmp_path, lambda *a: None)
    (cached,) = tmp_path.glob("*.keras")
    data = cached.read_bytes()
    cached.write_bytes(data[: len(data) // 3] if damage == "truncate" else os.urandom(4096))
    logs = []
    again, epochs = reproduce.pretrained("lenet-300-100", _splits(0), recipe, tmp_path, logs.append)
    assert epochs == 1  # trained again
    assert logs[0] == (f"[pretrain] the cached model {cached} cannot be loaded (not a .keras archive: "
                       "truncated or another kind of file); training it again")
    for got, want in zip(again.get_weights(), first.get_weights()):
        np.testing.assert_array_equal(got, want)
    assert [p.name for p in tmp_path.glob("*.keras")] == [cached.name]
    reused, epochs = reproduce.pretrained("lenet-300-100", _splits(0), recipe, tmp_path, logs.append)
    assert epochs == 0 and logs[-1] == f"[pretrain] reusing {cached}"
