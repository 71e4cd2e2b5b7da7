"""Held zeros on the running Keras backend: through EMA optimizers and through save/load (issue 20, point 4).

Before: with ``use_ema=True`` the moving averages (written over the weights
every ``ema_overwrite_frequency`` steps and at the end of `fit`) were not
masked, and every held zero leaked; a model saved after `fix_zeros` came back
without masks, and training it leaked its zeros silently.
"""

import keras
import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf._internal import private_api

BACKEND = keras.backend.backend()


def _data(n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 8)).astype("float32"), rng.normal(size=(n, 3)).astype("float32")


def _model(constraint=None):
    keras.utils.set_random_seed(1)
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="a", kernel_constraint=constraint),
        keras.layers.Dense(3, name="b"),
    ])


def _ema_optimizer():
    return keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3)


def _zeros(model):
    return {layer.name: keras.ops.convert_to_numpy(layer.kernel) == 0 for layer in model.layers}


def _leaks(model, zeros):
    return {layer.name: int(np.count_nonzero(keras.ops.convert_to_numpy(layer.kernel)[zeros[layer.name]]))
            for layer in model.layers}


def test_fix_zeros_holds_through_an_ema_optimizer():
    model = _model()
    model.compile(_ema_optimizer(), "mse")
    deephoyer_tf.prune(model, threshold=0.2)
    deephoyer_tf.fix_zeros(model)
    zeros = _zeros(model)
    assert all(z.sum() > 10 for z in zeros.values())
    model.fit(*_data(), batch_size=16, epochs=2, verbose=0)  # 8 steps: two EMA overwrites, then the final one
    assert _leaks(model, zeros) == {"a": 0, "b": 0}
    for layer in model.layers:
        average = private_api.ema_average(model.optimizer, layer.kernel)
        held = keras.ops.convert_to_numpy(average)[zeros[layer.name]]
        assert np.all(held == 0)


@pytest.mark.slow
def test_threshold_pruning_holds_through_an_ema_optimizer():
    """Pruned mid-fit: the averages, built up before pruning, are zeroed where the zeros are."""
    model = _model()
    model.compile(_ema_optimizer(), "mse")
    pruning = deephoyer_tf.ThresholdPruning(at_epoch=1, threshold=0.2)
    seen = {}
    record = keras.callbacks.LambdaCallback(
        on_epoch_begin=lambda epoch, logs: epoch == 1 and seen.update(_zeros(model)))
    model.fit(*_data(), batch_size=16, epochs=3, verbose=0, callbacks=[pruning, record])
    assert all(z.sum() > 10 for z in seen.values())
    assert _leaks(model, seen) == {"a": 0, "b": 0}


@pytest.mark.slow
def test_a_saved_model_loads_with_its_zeros_held(tmp_path):
    model = _model(keras.constraints.MaxNorm(5.0))
    model.compile(keras.optimizers.SGD(0.1, momentum=0.9), "mse")
    deephoyer_tf.prune(model, threshold=0.2)
    deephoyer_tf.fix_zeros(model)
    model.fit(*_data(), epochs=1, verbose=0)
    zeros = _zeros(model)
    path = tmp_path / "held.keras"
    model.save(path)

    loaded = deephoyer_tf.load_model(path)
    constraint = loaded.get_layer("a").kernel.constraint
    assert type(constraint).__name__ == "ZeroMask"
    assert isinstance(constraint.previous, keras.constraints.MaxNorm) and constraint.previous.max_value == 5.0
    loaded.fit(*_data(seed=1), epochs=2, verbose=0)
    assert _leaks(loaded, zeros) == {"a": 0, "b": 0}
    assert np.mean(keras.ops.convert_to_numpy(loaded.get_layer("b").kernel)[~zeros["b"]] != 0) == 1.0

    # Loaded by Keras alone: the first train step refuses instead of leaking.
    plain = keras.models.load_model(path)
    with pytest.raises(ValueError, match=r"zeros were held by deephoyer_tf\.fix_zeros .* Call "
                                         r"deephoyer_tf\.fix_zeros\(model\) before training"):
        plain.fit(*_data(), epochs=1, verbose=0)
    # Stripped: a plain config again.
    deephoyer_tf.strip_zero_masks(loaded)
    config = loaded.get_layer("a").get_config()["kernel_constraint"]
    assert config["class_name"] == "MaxNorm"
    assert loaded.get_layer("b").get_config()["kernel_constraint"] is None


def test_fix_zeros_on_a_loaded_model_holds_its_zeros(tmp_path):
    model = _model()
    model.compile("sgd", "mse")
    deephoyer_tf.prune(model, threshold=0.2)
    deephoyer_tf.fix_zeros(model)
    zeros = _zeros(model)
    model.save(tmp_path / "held.keras")
    loaded = keras.models.load_model(tmp_path / "held.keras")
    deephoyer_tf.fix_zeros(loaded)
    loaded.fit(*_data(), epochs=1, verbose=0)
    assert _leaks(loaded, zeros) == {"a": 0, "b": 0}
