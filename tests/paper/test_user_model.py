"""`reproduce.run_model` and `user_data`: the pipeline on a user's model and arrays (issue 21)."""

import json

import keras
import numpy as np
import pytest

from deephoyer_tf import load_model
from deephoyer_tf.paper import reproduce
from deephoyer_tf.paper import user_data


def blobs(n, seed, classes=3, width=8):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, classes, n)
    centers = np.random.default_rng(99).normal(size=(classes, width)) * 3
    return (centers[y] + rng.normal(size=(n, width))).astype("float32"), y


def build(width=8, classes=3, softmax=False):
    return keras.Sequential([
        keras.Input((width,)),
        keras.layers.Dense(16, activation="relu", name="h"),
        keras.layers.Dense(classes, activation="softmax" if softmax else None, name="out"),
    ])


def save_arrays(path, test=True, **changes):
    arrays = {}
    for split, (n, seed) in {"train": (256, 0), "val": (128, 1), "test": (128, 2)}.items():
        if split == "test" and not test:
            continue
        arrays[f"x_{split}"], arrays[f"y_{split}"] = blobs(n, seed)
    arrays.update(changes)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    np.savez(path, **arrays)
    return path


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    keras.utils.set_random_seed(0)
    model = build()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*blobs(256, 0), epochs=5, verbose=0)
    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    model.save(path)
    return path


TINY = dict(regularize_epochs=2, finetune_epochs=1, warmup_epochs=1, batch_size=32, select_finetune_epochs=1)


def test_load_arrays_reads_the_splits_and_the_optional_test_pair(tmp_path):
    data = user_data.load_arrays(save_arrays(tmp_path / "d.npz"))
    x, y = blobs(256, 0)
    np.testing.assert_array_equal(data.x_train, x)
    np.testing.assert_array_equal(data.y_train, y)
    assert data.has_test and data.n_classes == 3 and data.y_val.dtype == np.int64
    assert not user_data.load_arrays(save_arrays(tmp_path / "n.npz", test=False)).has_test


@pytest.mark.parametrize("changes, message", [
    ({"y_val": None}, r"lacks y_val\. Expected arrays x_train, y_train, x_val, y_val"),
    ({"y_test": None}, r"has x_test without its pair"),
    ({"y_train": np.zeros(10, int)}, r"x_train and y_train must have the same nonzero length\. Received 256 and 10"),
    ({"y_train": np.full(256, 0.5)}, r"`y_train` must hold integer class labels"),
    ({"x_val": np.zeros((128, 9), "float32")}, r"the x arrays differ in example shape"),
])
def test_load_arrays_names_what_does_not_fit(tmp_path, changes, message):
    with pytest.raises(ValueError, match=message):
        user_data.load_arrays(save_arrays(tmp_path / "d.npz", **changes))


def test_load_arrays_refuses_pickles_and_missing_files(tmp_path):
    np.savez(tmp_path / "p.npz", x_train=np.array([{"a": 1}], dtype=object))
    with pytest.raises(ValueError, match="not a readable .npz file of arrays"):
        user_data.load_arrays(tmp_path / "p.npz")
    with pytest.raises(FileNotFoundError, match="no such file"):
        user_data.load_arrays(tmp_path / "absent.npz")


def test_images_are_reshaped_to_the_model_input_and_mismatches_named():
    data = user_data.ArraySplits(*(np.zeros((4, 28, 28, 1), "float32"), np.zeros(4, int)) * 2)
    flat = user_data.fit_to_model(data, (784,), "mnist")
    assert flat.x_train.shape == (4, 784) and flat.x_test is None
    with pytest.raises(ValueError, match=r"takes examples of shape \(100,\), mnist gives x_train of shape \(28, 28, 1\)"):
        user_data.fit_to_model(data, (100,), "mnist")


def test_a_softmax_output_or_too_few_outputs_is_refused():
    with pytest.raises(ValueError, match="last layer 'out' applies a softmax; the training here expects logits"):
        user_data.check_classifier(build(softmax=True), 3)
    with pytest.raises(ValueError, match="outputs 3 values, the labels have 5 classes"):
        user_data.check_classifier(build(), 5)


@pytest.mark.slow
def test_run_model_writes_the_three_files_and_reads_test_once(tmp_path, dense):
    data = user_data.load_arrays(save_arrays(tmp_path / "d.npz"))
    recipe = reproduce.user_recipe("hs", strength=1e-3, **TINY)
    assert recipe.pretrain_epochs == 0
    lines = []
    results = reproduce.run_model(load_model(dense), "hs", data, output=tmp_path / "out", recipe=recipe,
                                  name="dense", dataset="d.npz", log=lambda *a: lines.append(" ".join(map(str, a))))
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["model.keras", "results.json", "stages.npz"]
    stored = json.loads((out / "results.json").read_text())
    assert stored["model"] == "dense" and stored["dataset"] == "d.npz" and stored["paper"] is None
    model = load_model(out / "model.keras")  # no Rescaling: takes the arrays as they are
    logits = model.predict(data.x_test, verbose=0)
    assert stored["test_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == data.y_test))
    nonzero = sum(int(np.count_nonzero(layer.kernel.numpy())) for layer in model.layers)
    assert stored["nonzero_weights"] == nonzero and stored["total_weights"] == 8 * 16 + 16 * 3
    with np.load(out / "stages.npz") as stages:
        assert sorted(stages.files) == sorted(f"{s}/{n}" for s in ("dense", "regularized", "final")
                                              for n in ("h", "out"))
        np.testing.assert_array_equal(stages["dense/h"], load_model(dense).get_layer("h").kernel.numpy())
    assert any(line.startswith("[regularize] hs strength 0.001") for line in lines)
    assert {k: v for k, v in results.items() if k != "recipe"} == {k: v for k, v in stored.items() if k != "recipe"}


def test_run_model_without_a_test_split_reports_none(tmp_path, dense):
    data = user_data.load_arrays(save_arrays(tmp_path / "d.npz", test=False))
    recipe = reproduce.user_recipe("magnitude", target_sparsity=0.5, **TINY)
    results = reproduce.run_model(load_model(dense), "magnitude", data, output=tmp_path / "out",
                                  recipe=recipe, log=lambda *a: None)
    assert results["test_accuracy"] is None and results["dense_test_accuracy"] is None
    assert results["nonzero_weights"] == pytest.approx(0.5 * results["total_weights"], abs=2)
    assert "no test split" in reproduce.format_results(results)


def test_user_recipe_needs_a_target_sparsity_for_magnitude():
    with pytest.raises(ValueError, match="Method 'magnitude' on a user's model needs the final sparsity"):
        reproduce.user_recipe("magnitude")
    quick = reproduce.user_recipe("hs", quick=True)
    assert (quick.pretrain_epochs, quick.train_subset) == (0, 6000)
    assert quick.strength == reproduce.RECIPES[("lenet-300-100", "hs")].strength
