"""The regularizers inside Keras: both flavours, serialization, training (issue 2)."""

import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deephoyer_tf import GroupHoyerSquare
from deephoyer_tf import GroupLasso
from deephoyer_tf import Hoyer
from deephoyer_tf import HoyerSquare
from tests.helpers.strategies import mirrored as mirrored_strategy

CLASSES = [Hoyer, HoyerSquare, GroupHoyerSquare, GroupLasso]
INSTANCES = [
    Hoyer(2e-4),
    HoyerSquare(3e-4),
    GroupHoyerSquare(1e-3, "outputs"),
    GroupHoyerSquare(1e-3, "both", input_strength=5e-4),
    GroupLasso(2e-3, "inputs", layout="out_in"),
]


def _model(module, regularizer):
    layers = module.layers
    return module.Sequential(
        [
            module.Input((8, 8, 2)),
            layers.Conv2D(4, 3, kernel_regularizer=regularizer, name="conv"),
            layers.Flatten(),
            layers.Dense(5, activation="relu", kernel_regularizer=regularizer, name="fc1"),
            layers.Dense(3, kernel_regularizer=regularizer, name="fc2"),
        ]
    )


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8, 8, 2)).astype(np.float32), rng.integers(0, 3, n)


def _expected_penalty(model, regularizer):
    return sum(float(regularizer(layer.kernel)) for layer in model.layers if hasattr(layer, "kernel"))


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("reg", INSTANCES, ids=repr)
def test_config_round_trip(reg):
    clone = type(reg).from_config(reg.get_config())
    assert clone.get_config() == reg.get_config()
    w = np.random.default_rng(0).normal(size=(3, 3, 4, 5)).astype(np.float32)
    assert float(clone(w)) == pytest.approx(float(reg(w)))


@pytest.mark.parametrize("reg", INSTANCES, ids=repr)
@pytest.mark.parametrize("module", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_serialize_deserialize_without_custom_objects(reg, module):
    config = module.regularizers.serialize(reg)
    restored = module.regularizers.deserialize(config)
    assert type(restored) is type(reg)
    assert restored.get_config() == reg.get_config()


@pytest.mark.parametrize("module", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_registered_names_and_aliases(module):
    for cls in CLASSES:
        assert module.saving.get_registered_name(cls) == f"deephoyer_tf>{cls.__name__}"
        alias_config = {"class_name": cls.alias, "config": {"strength": 0.5}}
        restored = module.regularizers.deserialize(alias_config)
        assert isinstance(restored, cls) and restored.strength == 0.5


@pytest.mark.parametrize("module", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_each_flavour_serializes_them_as_its_own_regularizers(module):
    """tf_keras warns about regularizers of another class; its base is added once it loads."""
    import warnings

    for reg in INSTANCES:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            config = module.regularizers.serialize(reg)
        assert config["registered_name"] == f"deephoyer_tf>{type(reg).__name__}"
        assert isinstance(reg, module.regularizers.Regularizer)


# ---------------------------------------------------------------- saving
def test_keras3_model_saves_and_loads(tmp_path):
    reg = GroupHoyerSquare(1e-3, input_strength=2e-3)
    model = _model(keras, reg)
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    restored = loaded.get_layer("fc1").kernel_regularizer
    assert isinstance(restored, GroupHoyerSquare)
    assert restored.get_config() == reg.get_config()
    x, _ = _data(4)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    np.testing.assert_allclose(
        sum(float(v) for v in loaded.losses), sum(float(v) for v in model.losses), rtol=1e-6
    )


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_tf_keras_model_saves_and_loads(tmp_path, suffix):
    reg = HoyerSquare(4e-4)
    model = _model(tf_keras, reg)
    path = str(tmp_path / f"m{suffix}")
    model.save(path)
    loaded = tf_keras.models.load_model(path)
    restored = loaded.get_layer("fc2").kernel_regularizer
    assert isinstance(restored, HoyerSquare) and restored.strength == pytest.approx(4e-4)
    x, _ = _data(4)
    np.testing.assert_allclose(loaded(x), model(x), atol=1e-6)
    np.testing.assert_allclose(
        sum(float(v) for v in loaded.losses), sum(float(v) for v in model.losses), rtol=1e-6
    )


@pytest.mark.slow
def test_round_trips_in_a_fresh_process_never_import_tfmot(tmp_path):
    """Save in one process; load in another; TFMOT stays out and tf.keras stays Keras 3."""
    script = textwrap.dedent(
        f"""
        import os, sys
        import keras, tf_keras
        import deephoyer_tf
        out = {str(tmp_path)!r}
        reg = deephoyer_tf.GroupHoyerSquare(1e-3)
        for module, suffixes in ((keras, [".keras"]), (tf_keras, [".keras", ".h5"])):
            m = module.Sequential([module.Input((4,)), module.layers.Dense(3, kernel_regularizer=reg)])
            for s in suffixes:
                m.save(os.path.join(out, module.__name__ + s))
        print("saved", "tensorflow_model_optimization" in sys.modules)
        """
    )
    load = textwrap.dedent(
        f"""
        import os, sys
        import keras, tf_keras
        import deephoyer_tf
        import tensorflow as tf
        out = {str(tmp_path)!r}
        names = []
        for module, suffixes in ((keras, [".keras"]), (tf_keras, [".keras", ".h5"])):
            for s in suffixes:
                m = module.models.load_model(os.path.join(out, module.__name__ + s))
                names.append(type(m.layers[-1].kernel_regularizer).__name__)
        print(names)
        print("tfmot", "tensorflow_model_optimization" in sys.modules)
        print("legacy", os.environ.get("TF_USE_LEGACY_KERAS"))
        print("tf.keras", tf.keras.__name__.split(".")[0], tf.keras.__version__[0])
        """
    )
    for code in (script, load):
        result = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=240
        )
        assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-4] == "['GroupHoyerSquare', 'GroupHoyerSquare', 'GroupHoyerSquare']"
    assert lines[-3] == "tfmot False"
    assert lines[-2] == "legacy None"
    assert lines[-1] == "tf.keras keras 3"


# ---------------------------------------------------------------- training
@pytest.mark.parametrize("module", [keras, tf_keras], ids=["keras3", "tf_keras"])
@pytest.mark.parametrize("reg", [HoyerSquare(1e-3), GroupHoyerSquare(1e-3)], ids=repr)
def test_model_losses_equal_penalties_computed_by_hand(module, reg):
    model = _model(module, reg)
    model.compile(optimizer=module.optimizers.SGD(0.05), loss=module.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    got = sum(float(v) for v in model.losses)
    assert len(model.losses) == 3
    assert got == pytest.approx(_expected_penalty(model, reg), rel=1e-6)


@pytest.mark.slow
def test_training_with_jit_compile_includes_the_penalty():
    reg = HoyerSquare(1e-2)
    model = _model(keras, reg)
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True)
    x, y = _data()
    penalty = _expected_penalty(model, reg)
    data_loss = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x)))
    loss = model.evaluate(x, y, batch_size=64, verbose=0)
    assert loss == pytest.approx(data_loss + penalty, rel=1e-5)
    history = model.fit(x, y, batch_size=16, epochs=2, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    # Switching the penalty off takes effect in the compiled step without recompiling.
    train_function = model.train_function
    reg.strength = 0.0
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert model.train_function is train_function
    data_loss = float(keras.losses.SparseCategoricalCrossentropy(from_logits=True)(y, model(x)))
    assert model.evaluate(x, y, batch_size=64, verbose=0) == pytest.approx(data_loss, rel=1e-5)


def test_zero_kernel_trains_without_nan():
    reg = GroupHoyerSquare(1e-2)
    model = _model(keras, reg)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(tf.zeros_like(layer.kernel))
    model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x, y = _data()
    history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
    assert all(np.all(np.isfinite(w)) for w in model.get_weights())


@pytest.mark.slow
@pytest.mark.parametrize("module", [keras, tf_keras], ids=["keras3", "tf_keras"])
def test_mirrored_strategy_training_matches_one_device(module, two_cpus):
    """Penalties under MirroredStrategy: same losses and weights as on one device."""
    x, y = _data(64)
    results = []
    for strategy in (tf.distribute.OneDeviceStrategy(two_cpus[0]), mirrored_strategy(two_cpus)):
        reg = GroupHoyerSquare(1e-2)
        with strategy.scope():
            module.utils.set_random_seed(1)
            model = _model(module, reg)
            model.compile(optimizer=module.optimizers.SGD(0.1), loss=module.losses.SparseCategoricalCrossentropy(from_logits=True))
        history = model.fit(x, y, batch_size=32, epochs=2, shuffle=False, verbose=0)
        results.append((history.history["loss"], model.get_weights()))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-5)
    for a, b in zip(results[0][1], results[1][1]):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_mixed_precision_penalty_is_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        reg = HoyerSquare(1e-3)
        model = _model(keras, reg)
        model.compile(optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        x, y = _data()
        history = model.fit(x, y, batch_size=16, epochs=1, verbose=0)
        assert np.all(np.isfinite(history.history["loss"]))
        assert all(v.dtype == "float32" for v in model.losses)
        assert sum(float(v) for v in model.losses) == pytest.approx(_expected_penalty(model, reg), rel=1e-5)
    finally:
        keras.mixed_precision.set_global_policy("float32")
