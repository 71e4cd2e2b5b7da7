"""tf_keras: held zeros through `.h5`/`.keras` save and load, and through EMA optimizers (issue 20)."""

import numpy as np
import pytest

import deephoyer_tf

tf_keras = pytest.importorskip("tf_keras")


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(64, 8)).astype("float32"), rng.normal(size=(64, 3)).astype("float32")


def _model(optimizer):
    tf_keras.utils.set_random_seed(1)
    model = tf_keras.Sequential([
        tf_keras.Input((8,)),
        tf_keras.layers.Dense(16, activation="relu", name="a"),
        tf_keras.layers.Dense(3, name="b"),
    ])
    model.compile(optimizer, "mse")
    deephoyer_tf.prune(model, threshold=0.2)
    deephoyer_tf.fix_zeros(model)
    return model


def _leaks(model, zeros):
    return [int(np.count_nonzero(layer.kernel.numpy()[z])) for layer, z in zip(model.layers, zeros)]


@pytest.mark.parametrize("suffix", [".h5", ".keras"])
def test_a_saved_tf_keras_model_loads_with_its_zeros_held(tmp_path, suffix):
    model = _model(tf_keras.optimizers.SGD(0.1, momentum=0.9))
    zeros = [layer.kernel.numpy() == 0 for layer in model.layers]
    path = tmp_path / f"held{suffix}"
    model.save(path)
    loaded = deephoyer_tf.load_model(path)
    assert type(loaded).__module__.startswith("tf_keras")
    loaded.fit(*_data(1), epochs=2, verbose=0)
    assert _leaks(loaded, zeros) == [0, 0]
    plain = tf_keras.models.load_model(path)
    with pytest.raises(ValueError, match=r"Call deephoyer_tf\.fix_zeros\(model\) before training"):
        plain.fit(*_data(), epochs=1, verbose=0)


def test_tf_keras_ema_optimizer_keeps_the_zeros():
    model = _model(tf_keras.optimizers.Adam(0.05, use_ema=True, ema_momentum=0.9, ema_overwrite_frequency=3))
    zeros = [layer.kernel.numpy() == 0 for layer in model.layers]
    assert all(z.sum() > 10 for z in zeros)
    model.fit(*_data(), batch_size=16, epochs=2, verbose=0)
    assert _leaks(model, zeros) == [0, 0]
