"""No code from a model file runs unless the caller opts in (issue 20, point 1).

Every loader of the package gets the same two hostile files, each with a
`Lambda` layer whose function writes a marker file: a Keras 3 `.keras` file
and a tf_keras `.h5` file (tf_keras reads `.h5` without a safe mode). The
marker must never appear, and the error must name the file, the layer and
the opt-in; with the opt-in, the file loads (and the marker appears).
"""

import shutil
import types

import keras
import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf import cli
from deephoyer_tf._internal import loading

tf_keras = pytest.importorskip("tf_keras")


def _writer(marker):
    # A literal path in the bytecode, so the lambda needs no globals when loaded elsewhere.
    return eval(f"lambda t: (open({str(marker)!r}, 'w'), t)[1]")  # noqa: S307 - the hostile function


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    """{kind: path} of files whose Lambda writes `marker`, and the marker's path."""
    folder = tmp_path_factory.mktemp("hostile")
    marker = folder / "marker"
    files = {}
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(2, name="fc")(keras.layers.Lambda(_writer(marker), name="evil")(inputs))
    files["keras"] = folder / "evil.keras"
    keras.Model(inputs, outputs).save(files["keras"])
    inputs = tf_keras.Input((4,))
    outputs = tf_keras.layers.Dense(2, name="fc")(tf_keras.layers.Lambda(_writer(marker), name="evil")(inputs))
    files["tf_keras_h5"] = folder / "evil.h5"
    tf_keras.Model(inputs, outputs).save(files["tf_keras_h5"])
    return types.SimpleNamespace(files=files, marker=marker)


@pytest.fixture
def marker(hostile):
    """The marker path, absent at the start of the test (building the files called the lambdas)."""
    if hostile.marker.exists():
        hostile.marker.unlink()
    yield hostile.marker


KINDS = ["keras", "tf_keras_h5"]


def _assert_refused(error, path):
    text = str(error)
    assert repr(str(path)) in text, text
    assert "'evil (Lambda)'" in text, text
    assert "safe_mode=False" in text and "--unsafe" in text, text


@pytest.mark.parametrize("kind", KINDS)
def test_python_api_refuses_a_lambda_and_loads_it_on_opt_in(hostile, marker, kind):
    path = hostile.files[kind]
    with pytest.raises(deephoyer_tf.UnsafeModelError) as info:
        deephoyer_tf.load_model(path)
    _assert_refused(info.value, path)
    assert isinstance(info.value, ValueError)
    assert not marker.exists()
    model = deephoyer_tf.load_model(path, safe_mode=False, compile=False)
    assert [layer.name for layer in model.layers][-2:] == ["evil", "fc"]
    assert marker.exists()  # the opt-in really runs the file's code


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("command", ["report", "export"])
def test_cli_refuses_a_lambda_and_loads_it_with_unsafe(hostile, marker, kind, command, tmp_path,
                                                       monkeypatch, capsys):
    path = str(hostile.files[kind])
    extra = [str(tmp_path / "out.tflite")] if command == "export" else []
    with pytest.raises(SystemExit) as info:
        cli.main([command, path, *extra])
    _assert_refused(info.value.code, path)
    assert not marker.exists()
    exported = []
    from deephoyer_tf.export import tflite

    # The TFLite conversion itself is tested elsewhere; here only what reaches it.
    monkeypatch.setattr(tflite, "export_tflite", lambda model, *a, **k: exported.append(model) or
                        tflite.ExportResult(path="x", size_bytes=0, gzip_bytes=0, sparse_tensors=0,
                                            max_abs_error=0.0, tolerance=0.0, quantize=None,
                                            runtime="-", op_resolver="-"))
    capsys.readouterr()
    assert cli.main([command, path, *extra, "--unsafe"]) == 0
    assert marker.exists()
    if command == "export":
        assert [layer.name for layer in exported[0].layers][-2:] == ["evil", "fc"]
    else:
        assert "fc     Dense            8 / 8" in capsys.readouterr().out


@pytest.mark.parametrize("kind", KINDS)
def test_evaluate_refuses_a_lambda_from_the_cli_and_from_python(hostile, marker, kind):
    from deephoyer_tf.paper import evaluate

    path = hostile.files[kind]
    with pytest.raises(SystemExit) as info:
        cli.main(["evaluate", str(path), "--dataset", "mnist"])
    _assert_refused(info.value.code, path)
    with pytest.raises(deephoyer_tf.UnsafeModelError) as info:
        evaluate.evaluate(str(path), dataset="mnist")
    _assert_refused(info.value, path)
    assert not marker.exists()


@pytest.mark.slow
def test_search_refuses_a_hostile_dense_model(hostile, marker, tmp_path):
    from deephoyer_tf import search

    data = (np.zeros((8, 4), "float32"), np.zeros(8, "int64"))
    for kind in KINDS:
        path = hostile.files[kind]
        with pytest.raises(deephoyer_tf.UnsafeModelError) as info:
            search.run(lambda: None, data, data, method="hs", n_trials=1, output=tmp_path / kind,
                       storage=f"sqlite:///{tmp_path / (kind + '.db')}", dense_model=str(path),
                       log=lambda *a: None)
        _assert_refused(info.value, path)
    # The dense model a previous run left in the output folder is checked too.
    output = tmp_path / "reuse"
    output.mkdir()
    shutil.copy(hostile.files["keras"], output / "dense.keras")
    with pytest.raises(deephoyer_tf.UnsafeModelError) as info:
        search.run(lambda: None, data, data, method="hs", n_trials=1, output=output,
                   storage=f"sqlite:///{tmp_path / 'reuse.db'}", log=lambda *a: None)
    _assert_refused(info.value, output / "dense.keras")
    assert not marker.exists()


def test_search_result_load_model_refuses_a_hostile_trial_model(hostile, marker, tmp_path):
    from deephoyer_tf.search import study

    path = str(hostile.files["tf_keras_h5"])
    result = study.SearchResult(study=None, trials=[{"number": 0, "state": "COMPLETE", "model_path": path}],
                                pareto=[0], chosen={"number": 0}, dense_validation_accuracy=1.0,
                                output=tmp_path, size_metric="nonzero_weights")
    with pytest.raises(deephoyer_tf.UnsafeModelError) as info:
        result.load_model()
    _assert_refused(info.value, path)
    assert not marker.exists()
    assert result.load_model(safe_mode=False).layers[-1].name == "fc"


@pytest.mark.slow
def test_reproduce_cache_refuses_a_hostile_cached_dense_model(hostile, marker, tmp_path):
    from deephoyer_tf.paper import reproduce

    rng = np.random.default_rng(0)
    data = types.SimpleNamespace(
        x_train=rng.random((16, 28, 28, 1), dtype="float32"), y_train=rng.integers(0, 10, 16),
        x_val=rng.random((8, 28, 28, 1), dtype="float32"), y_val=rng.integers(0, 10, 8),
    )
    recipe = reproduce.recipe_for("lenet-300-100", "hs", quick=True, pretrain_epochs=1, batch_size=8)
    cache = tmp_path / "cache"
    _, epochs = reproduce.pretrained("lenet-300-100", data, recipe, cache, log=lambda *a: None)
    assert epochs == 1
    (cached,) = [p for p in cache.glob("*.keras")]
    _, epochs = reproduce.pretrained("lenet-300-100", data, recipe, cache, log=lambda *a: None)
    assert epochs == 0  # reused from the cache
    shutil.copy(hostile.files["keras"], cached)  # someone replaces the cache entry
    with pytest.raises(deephoyer_tf.UnsafeModelError) as info:
        reproduce.pretrained("lenet-300-100", data, recipe, cache, log=lambda *a: None)
    _assert_refused(info.value, cached)
    assert not marker.exists()


def _config(layer):
    return {"class_name": "Functional", "config": {"name": "m", "layers": [
        {"class_name": "InputLayer", "config": {"name": "in"}}, layer]}}


@pytest.mark.parametrize("layer, found", [
    # tf_keras' own Lambda, nested inside a wrapper layer
    ({"class_name": "TimeDistributed", "config": {"name": "td", "layer": {
        "class_name": "Lambda", "config": {"name": "inner", "function": ["...", None, None],
                                           "function_type": "lambda"}}}}, "'inner (Lambda)'"),
    # Keras 3's serialized lambda, as an activation
    ({"class_name": "Dense", "config": {"name": "d", "activation": {
        "class_name": "__lambda__", "config": {"code": "..."}}}}, "'d (Dense)' holds a Lambda"),
    # a function from a module tf_keras would import
    ({"class_name": "Dense", "config": {"name": "d", "activation": {
        "module": "os", "class_name": "system", "config": "system"}}}, "the module 'os' ('system')"),
    ({"class_name": "Dense", "config": {"name": "d", "activation": {
        "module": "builtins", "class_name": "eval", "config": "eval"}}}, "the Python builtin 'eval'"),
    ({"module": "__main__", "class_name": "MyLayer", "config": {"name": "mine"}}, "the module '__main__'"),
    # a TensorFlow op that writes files
    ({"class_name": "TFOpLambda", "config": {"name": "w", "function": "io.write_file"}},
     "the TensorFlow op tf.io.write_file"),
    ({"class_name": "Custom", "config": {"name": "c", "output_shape_type": "lambda"}}, "(output_shape_type)"),
])
def test_check_config_refuses_code(layer, found):
    with pytest.raises(loading.UnsafeModelError, match="Refusing to load 'f.h5'") as info:
        loading.check_config(_config(layer), "f.h5")
    assert found in str(info.value), str(info.value)


def test_check_config_accepts_the_package_models_in_both_flavours(tmp_path):
    """No false alarm: regularized LeNets, held zeros, TF ops in tf_keras, Keras' builtins names."""
    for flavour in ("keras", "tf_keras"):
        model = deephoyer_tf.models.lenet_5(deephoyer_tf.GroupHoyerSquare(1e-4), flavour=flavour)
        if flavour == "keras":
            deephoyer_tf.fix_zeros(model)
        module = keras if flavour == "keras" else tf_keras
        model.compile("adam", module.losses.SparseCategoricalCrossentropy(from_logits=True), ["accuracy"])
        for suffix in (".keras", ".h5"):
            path = tmp_path / f"{flavour}{suffix}"
            model.save(path)
            config = loading._stored_config(str(path))
            assert config is not None
            loading.check_config(config, str(path))
            loaded = deephoyer_tf.load_model(path)
            np.testing.assert_array_equal(loaded.get_weights()[0], model.get_weights()[0])
    inputs = tf_keras.Input((4,))
    import tensorflow as tf

    outputs = tf.nn.relu(inputs) + 1.0  # TFOpLambda layers: tf.nn.relu, __operators__.add
    tf_keras.Model(inputs, tf.reshape(outputs, (-1, 2, 2))).save(tmp_path / "ops.h5")
    loaded = deephoyer_tf.load_model(tmp_path / "ops.h5", compile=False)
    assert loaded.predict(np.ones((1, 4), "float32"), verbose=0).shape == (1, 2, 2)


def test_load_model_arguments(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.keras"):
        deephoyer_tf.load_model(tmp_path / "missing.keras")
    with pytest.raises(TypeError, match="argument `safe_mode`. Expected a bool. Received: safe_mode='no'"):
        deephoyer_tf.load_model(tmp_path, safe_mode="no")
    with pytest.raises(deephoyer_tf.UnsafeModelError, match="SavedModel directory"):
        deephoyer_tf.load_model(tmp_path)


def test_cli_loads_nothing_unsafely_without_the_flag():
    """--unsafe exists exactly on the commands that load a model file, and defaults off."""
    parser = cli.build_parser()
    for command in (["report", "m.keras"], ["export", "m.keras", "o.tflite"]):
        assert parser.parse_args(command).unsafe is False
        assert parser.parse_args([*command, "--unsafe"]).unsafe is True
