"""Issue 18: the authors' recipe, models that carry their preprocessing, `evaluate`, the selection rule."""

import dataclasses
import json

import keras
import numpy as np
import pytest

from deephoyer_tf import cli
from deephoyer_tf.paper import evaluate
from deephoyer_tf.paper import preprocessing
from deephoyer_tf.paper import reproduce
from deephoyer_tf.paper.datasets import MnistSplits


def _splits(seed=0, n=64):
    rng = np.random.default_rng(seed)

    def images(k):  # standardized pixels, as datasets.load_mnist gives them
        pixels = rng.integers(0, 256, size=(k, 28, 28, 1))
        return ((pixels - 33.0) / 78.0).astype("float32")

    def labels(k):
        return rng.integers(0, 10, k)

    return MnistSplits(images(n), labels(n), images(16), labels(16), images(16), labels(16), 33.0, 78.0)


def test_authors_recipe_follows_the_public_code():
    recipe = reproduce.recipe_for("lenet-300-100", "hs", name="authors")
    assert (recipe.inputs, recipe.init, recipe.batch_size, recipe.learning_rate) == ("unit", "torch", 100, 1e-3)
    assert (recipe.pretrain_epochs, recipe.regularize_epochs, recipe.finetune_epochs) == (250, 250, 50)
    assert {recipe.pretrain_schedule, recipe.regularize_schedule, recipe.finetune_schedule} == {"constant"}
    assert (recipe.strength, recipe.std_ratio, recipe.biases) == (2e-4, 0.02, True)  # Table 7
    assert (recipe.finetune_weight_decay, recipe.warmup_epochs, recipe.track_test) == (1e-4, 0, True)
    assert reproduce.recipe_for("lenet-5", "hs", name="authors").std_ratio == 0.03


def test_authors_recipe_is_refused_for_methods_the_authors_code_lacks():
    with pytest.raises(ValueError, match=r"the authors' code has recipes for .* Received: recipe='authors' "
                                         r"with \('lenet-300-100', 'l1'\)"):
        reproduce.recipe_for("lenet-300-100", "l1", name="authors")
    with pytest.raises(ValueError, match=r"Expected one of \['default', 'authors'\]\. Received: recipe='paper'"):
        reproduce.recipe_for("lenet-300-100", "hs", name="paper")


def test_torch_initialization_is_uniform_in_one_over_sqrt_fan_in():
    model = reproduce.build_model("lenet-300-100", init="torch", seed=3)
    for layer, fan_in in (("fc1", 784), ("fc2", 300), ("fc3", 100)):
        for weights in (model.get_layer(layer).kernel.numpy(), model.get_layer(layer).bias.numpy()):
            bound = 1 / np.sqrt(fan_in)
            assert np.abs(weights).max() <= bound
            assert np.abs(weights).max() > 0.9 * bound  # spread over the whole interval
            assert np.count_nonzero(weights) == weights.size


@pytest.mark.slow
@pytest.mark.parametrize("biases", [True, False])
def test_the_authors_recipe_regularizes_prunes_and_holds_biases_when_asked(tmp_path, biases):
    keras.utils.set_random_seed(0)
    recipe = reproduce.recipe_for(
        "lenet-300-100", "hs", name="authors", pretrain_epochs=1, regularize_epochs=1,
        finetune_epochs=2, batch_size=32, std_ratio=0.5, biases=biases)
    data = _splits()
    dense = reproduce.build_model("lenet-300-100", init="torch", seed=0)
    regularized_penalties = []
    original = reproduce.regularize

    def spy(model, regularizer, **kwargs):
        result = original(model, regularizer, **kwargs)
        if kwargs.get("bias_regularizer") is not None or not regularized_penalties:
            regularized_penalties.append(len(result.losses))
        return result

    reproduce.regularize = spy
    try:
        final, extra = reproduce._run_deephoyer(
            "hs", dense, data, data.x_train, data.y_train, recipe, 0.1, lambda *a: None)
    finally:
        reproduce.regularize = original
    # The penalty: 3 kernels, plus 3 biases when asked (the authors' code: every parameter tensor).
    assert regularized_penalties[0] == (6 if biases else 3)
    for layer in ("fc1", "fc2", "fc3"):
        bias = final.get_layer(layer).bias.numpy()
        regularized = extra["regularized_kernels"][layer]
        assert np.count_nonzero(final.get_layer(layer).kernel.numpy()) <= np.count_nonzero(regularized)
        if biases:
            assert np.count_nonzero(bias) < bias.size  # std ratio 0.5 zeroes some biases, still 0 after fine-tuning
    if not biases:
        assert all(np.count_nonzero(final.get_layer(n).bias.numpy()) == final.get_layer(n).bias.shape[0]
                   for n in ("fc1", "fc2", "fc3"))
    # The final model has no penalties and no masks left.
    assert final.losses == []
    assert all(getattr(v, "constraint", None) is None for v in final.trainable_variables)


@pytest.mark.slow
def test_held_bias_zeros_survive_adam_steps():
    model = reproduce.build_model("lenet-300-100", init="torch", seed=1)
    model.get_layer("fc2").bias.assign(np.where(np.arange(100) % 2 == 0, 0.0, 0.5).astype("float32"))
    recipe = reproduce.recipe_for("lenet-300-100", "hs", name="authors", batch_size=16)
    plain = reproduce._finetune_copy(model, recipe, epochs=1, train_size=64)
    data = _splits()
    plain.fit(data.x_train, data.y_train, batch_size=16, epochs=2, verbose=0)
    bias = plain.get_layer("fc2").bias.numpy()
    assert np.all(bias[::2] == 0) and np.all(bias[1::2] != 0.5)  # held zeros, trained others


@pytest.mark.parametrize("inputs", ["standardize", "unit"])
def test_saved_models_carry_their_input_scaling(tmp_path, inputs):
    data = _splits()
    model = reproduce.build_model("lenet-300-100")
    scaled = preprocessing.recipe_inputs(data, inputs)
    scale, offset = preprocessing.scale_and_offset(inputs, data.mean, data.std)
    wrapped = preprocessing.with_preprocessing(model, scale, offset)
    wrapped.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras", safe_mode=True)
    pixels = preprocessing.raw_pixels(data.x_test, data.mean, data.std)
    assert pixels.min() >= 0 and pixels.max() <= 255 and np.all(pixels == np.round(pixels))
    np.testing.assert_allclose(loaded.predict(pixels, verbose=0), model.predict(scaled.x_test, verbose=0),
                               rtol=1e-4, atol=1e-4)
    assert evaluate.has_preprocessing(loaded) and not evaluate.has_preprocessing(model)
    assert type(loaded.layers[0]).__name__ == "Rescaling"


def test_unit_inputs_are_pixels_over_255():
    data = _splits()
    unit = preprocessing.recipe_inputs(data, "unit")
    expected = np.round(data.x_val.astype(np.float64) * data.std + data.mean) / 255
    np.testing.assert_allclose(unit.x_val, expected, rtol=1e-6)
    assert preprocessing.recipe_inputs(data, "standardize") is data


@pytest.mark.slow
def test_evaluate_prints_accuracy_and_counts_as_json(tmp_path, mnist_dir, capsys):
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(),
                              keras.layers.Dense(10, name="fc")])
    kernel = model.get_layer("fc").kernel.numpy()
    kernel[::3] = 0
    model.get_layer("fc").kernel.assign(kernel)
    model.get_layer("fc").bias.assign(np.array([0, 0, 1, 2, 0, 3, 4, 0, 5, 6], "float32"))
    wrapped = preprocessing.with_preprocessing(model, 1 / 255, 0.0)
    wrapped.save(tmp_path / "small.keras")
    assert cli.main(["evaluate", str(tmp_path / "small.keras"), "--data-dir", mnist_dir]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    # NumPy reference: the same computation on the raw test pixels.
    from deephoyer_tf.paper import datasets

    data = datasets.load_mnist(mnist_dir)
    pixels = preprocessing.raw_pixels(data.x_test, data.mean, data.std).reshape(-1, 784) / 255
    logits = pixels @ kernel + model.get_layer("fc").bias.numpy()
    assert result["accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == data.y_test), abs=1e-4)
    assert result["nonzero_weights"] == np.count_nonzero(kernel) and result["total_weights"] == 7840
    assert (result["nonzero_biases"], result["total_biases"]) == (6, 10)
    assert result["macs"] == np.count_nonzero(np.any(kernel != 0, axis=1)) * 10
    assert (result["split"], result["examples"], result["dataset"]) == ("test", 10000, "mnist")


def test_evaluate_refuses_a_model_without_its_preprocessing(tmp_path, mnist_dir, capsys):
    model = keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model.save(tmp_path / "bare.keras")
    assert cli.main(["evaluate", str(tmp_path / "bare.keras"), "--data-dir", mnist_dir]) == 2
    err = capsys.readouterr().err
    assert "does not start with a Rescaling or Normalization layer" in err
    assert cli.main(["evaluate", str(tmp_path / "missing.keras")]) == 2


def test_selection_accuracy_averages_the_last_epochs():
    assert reproduce.selection_accuracy([0.5, 0.9, 0.7], 2) == pytest.approx(0.8)
    assert reproduce.selection_accuracy([0.9], 3) == pytest.approx(0.9)
    with pytest.raises(ValueError, match="Expected an int >= 1. Received: average_epochs=0"):
        reproduce.selection_accuracy([0.9], 0)


def test_averaged_selection_is_stable_where_one_epoch_flips(monkeypatch):
    """Validation accuracy that wobbles by one image from epoch to epoch.

    Ratio 0.1's true accuracy sits 0.6 images below the cut, ratio 0.05's 3
    images above. Judged by its last epoch alone, ratio 0.1 passes or fails
    with the phase of the wobble; averaged over 4 epochs, the same ratio is
    chosen whatever the phase.
    """
    n = 5000
    cut = 0.9824
    truth = {0.2: cut - 40 / n, 0.1: cut - 0.6 / n, 0.05: cut + 3 / n, 0.02: cut + 4 / n}
    model = reproduce.build_model("lenet-300-100")
    data = _splits()

    def choose(average, phase):
        def finetune(m, d, x, y, recipe):
            ratio = current["ratio"]
            wobble = [(1 if (e + phase) % 2 else -1) / n for e in range(recipe.select_finetune_epochs)]
            return [truth[ratio] + w for w in wobble]

        current = {}
        original_prune = reproduce.prune

        def prune(m, std_ratio, biases=False):
            current["ratio"] = std_ratio
            return original_prune(m, std_ratio=std_ratio, biases=biases)

        monkeypatch.setattr(reproduce, "_selection_finetune", finetune)
        monkeypatch.setattr(reproduce, "prune", prune)
        recipe = dataclasses.replace(reproduce.recipe_for(
            "lenet-300-100", "hs", std_ratios=tuple(truth), select_finetune_epochs=4,
            select_average_epochs=average, tolerance=0.0), select_screen_drop=None)
        ratio, tries = reproduce.select_std_ratio(model, data, recipe, cut, log=lambda *a: None)
        return ratio

    assert {choose(1, phase) for phase in (0, 1)} == {0.1, 0.05}  # one epoch: flips with the wobble
    assert {choose(4, phase) for phase in (0, 1)} == {0.05}  # averaged: the same choice


@pytest.mark.slow
def test_reproduce_authors_quick_records_both_accuracies_and_evaluates_to_them(tmp_path, mnist_dir, capsys):
    out = tmp_path / "run"
    assert cli.main(["reproduce", "lenet-300-100", "--method", "hs", "--recipe", "authors", "--quick",
                     "--data-dir", mnist_dir, "--output", str(out), "--cache-dir", str(tmp_path / "cache")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["recipe"]["inputs"] == "unit" and results["recipe"]["biases"] is True
    history = results["test_accuracy_by_finetune_epoch"]
    assert len(history) == results["recipe"]["finetune_epochs"] + 1  # after pruning, after each epoch
    assert results["best_test_epoch_accuracy"] == max(history[:-1])  # the authors' selection, labelled
    assert results["test_accuracy"] == history[-1]  # the final model's, read once
    assert set(results["accuracy_labels"]) == {"test_accuracy", "best_test_epoch_accuracy"}
    assert results["nonzero_biases"] < results["total_biases"] == 410  # biases pruned too
    capsys.readouterr()
    assert cli.main(["evaluate", str(out / "model.keras"), "--data-dir", mnist_dir]) == 0
    evaluated = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert evaluated["accuracy"] == pytest.approx(results["test_accuracy"], abs=1e-4)
    for key in ("nonzero_weights", "nonzero_biases", "macs", "structure"):
        assert evaluated[key] == results[key]


def test_evaluate_runs_no_code_from_the_model_file(tmp_path, mnist_dir, capsys):
    marker = tmp_path / "marker"
    model = keras.Sequential([
        keras.Input((28, 28, 1)), keras.layers.Rescaling(1 / 255),
        keras.layers.Lambda(eval(f"lambda t: (open({str(marker)!r}, 'w'), t)[1]")),  # noqa: S307
        keras.layers.Flatten(), keras.layers.Dense(10)])
    marker.unlink(missing_ok=True)
    model.save(tmp_path / "evil.keras")
    with pytest.raises(SystemExit, match="Lambda"):
        cli.main(["evaluate", str(tmp_path / "evil.keras"), "--data-dir", mnist_dir])
    assert not marker.exists()


def test_screening_skips_the_fine_tune_of_ratios_that_destroy_the_network(monkeypatch):
    model = reproduce.build_model("lenet-300-100")
    data = _splits()
    finetuned = []

    def finetune(m, d, x, y, recipe):
        finetuned.append(True)
        return [1.0]

    monkeypatch.setattr(reproduce, "_selection_finetune", finetune)
    accuracies = iter([0.5, 0.95])  # right after pruning at ratios 1.0 then 0.5
    monkeypatch.setattr(reproduce, "_accuracy", lambda m, x, y, batch_size=1000: next(accuracies))
    recipe = reproduce.recipe_for("lenet-300-100", "hs", std_ratios=(0.5, 1.0), select_screen_drop=0.1)
    ratio, tries = reproduce.select_std_ratio(model, data, recipe, 0.98, log=lambda *a: None)
    assert ratio == 0.5 and len(finetuned) == 1
    assert tries[0]["screened_out"] and tries[0]["std_ratio"] == 1.0 and tries[0]["pruned_accuracy"] == 0.5


@pytest.mark.parametrize("reference_rule, expected", [("dense", 0.001), ("plateau", 0.2)])
def test_a_flat_plateau_below_the_dense_cut_keeps_the_largest_ratio_on_it(monkeypatch, reference_rule, expected):
    """Seed 1 of the main job: regularization cost 0.3 points, pruning nothing more.

    Every ratio from 0.2 down reaches the same validation accuracy (the
    regularized model's), 0.1 points under the dense cut. Judged against the
    dense model, none passes and the smallest ratio (the least sparse) is
    used; judged against the plateau, the largest ratio on it is chosen.
    """
    level = {0.3: 0.9700, 0.2: 0.9822, 0.1: 0.9829, 0.01: 0.9835, 0.001: 0.9835}
    current = {}
    original_prune = reproduce.prune

    def prune(m, std_ratio, biases=False):
        current["ratio"] = std_ratio
        return original_prune(m, std_ratio=std_ratio, biases=biases)

    monkeypatch.setattr(reproduce, "prune", prune)
    monkeypatch.setattr(reproduce, "_selection_finetune", lambda m, d, x, y, r: [level[current["ratio"]]] * 3)
    recipe = dataclasses.replace(reproduce.recipe_for(
        "lenet-300-100", "hs", std_ratios=tuple(level), tolerance=0.002, select_reference=reference_rule),
        select_screen_drop=None)
    ratio, tries = reproduce.select_std_ratio(reproduce.build_model("lenet-300-100"), _splits(), recipe,
                                              0.9862, log=lambda *a: None)
    assert ratio == expected
    assert tries[-1]["std_ratio"] == expected
