"""prune() on the running Keras backend: exact at extreme scales in every dtype, atomic when it raises.

Issue 20, points 2 and 3: the standard deviation was computed in the
kernel's own dtype (its squares overflowed or underflowed, removing every
weight or none), and a model the report refuses was pruned before the
refusal.
"""

import statistics

import keras
import numpy as np
import pytest

import deephoyer_tf


def _model(dtype, scale, seed=0):
    model = keras.Sequential([
        keras.Input((16,)),
        keras.layers.Dense(12, name="fc1", dtype=dtype),
        keras.layers.Dense(4, name="fc2", dtype=dtype),
    ])
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        layer.kernel.assign((rng.normal(size=layer.kernel.shape) * scale).astype(dtype))
    return model


def _numpy_reference(kernel, ratio):
    """The paper's rule with exact statistics: w if |w| >= ratio * std(W) else 0.

    `statistics.pstdev` sums exact fractions, so no scale over- or underflows.
    """
    w = kernel.astype(np.float64)
    std = statistics.pstdev(float(v) for v in w.ravel())
    return np.where(np.abs(w) < ratio * std, np.zeros_like(kernel), kernel)


@pytest.mark.parametrize("dtype, scale", [
    ("float32", 1e20), ("float32", 1e-25),   # squares overflow / underflow in float32
    ("bfloat16", 1e20), ("bfloat16", 1e-25),  # the same range in 16 bits
    ("float16", 1e4), ("float16", 1e-6),     # float16: squares overflow past 256, subnormals underflow
    ("float64", 1e200), ("float64", 1e-200),
])
def test_std_ratio_at_extreme_scales_matches_a_float64_reference(dtype, scale):
    if dtype == "float64" and keras.backend.backend() == "jax":
        import jax

        if not jax.config.jax_enable_x64:
            pytest.skip("JAX runs float64 as float32 unless jax_enable_x64")
    model = _model(dtype, scale)
    kernels = {layer.name: keras.ops.convert_to_numpy(layer.kernel) for layer in model.layers}
    assert all(np.isfinite(k.astype(np.float64)).all() and np.mean(k != 0) > 0.95 for k in kernels.values())
    deephoyer_tf.prune(model, std_ratio=0.8)
    for layer in model.layers:
        got = keras.ops.convert_to_numpy(layer.kernel)
        want = _numpy_reference(kernels[layer.name], 0.8)
        assert got.dtype == want.dtype
        np.testing.assert_array_equal(got.astype(np.float64), want.astype(np.float64), err_msg=layer.name)
        # About 58% of a normal sample lies within 0.8 std: some go, not all.
        assert 0.3 < np.mean(got == 0) < 0.85, (layer.name, np.mean(got == 0))


def test_an_absolute_threshold_is_compared_in_float64_not_rounded_to_float16():
    model = _model("float16", 1.0)
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc1").kernel)
    # A threshold between two float16 values: float16(t) rounds it onto a weight.
    w = np.float16(np.abs(kernel).flat[0])
    t = float(w) * (1 + 2.0 ** -13)  # above w, rounds down to w in float16
    assert np.float16(t) == w
    deephoyer_tf.prune(model, threshold={"fc1": t})
    got = keras.ops.convert_to_numpy(model.get_layer("fc1").kernel)
    assert got.flat[0] == 0.0
    np.testing.assert_array_equal(got, _numpy_threshold(kernel, t))


def _numpy_threshold(kernel, t):
    return np.where(np.abs(kernel.astype(np.float64)) < t, np.zeros_like(kernel), kernel)


def _channels_first_model():
    return keras.Sequential([
        keras.Input((2, 6, 6)),
        keras.layers.Dense(6, name="fc0"),  # prunable, before the refused layer
        keras.layers.Conv2D(3, 3, data_format="channels_first", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(4, name="fc"),
    ])


def test_prune_leaves_the_model_bit_identical_when_the_report_refuses_it():
    model = _channels_first_model()
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match="channels_first"):
        deephoyer_tf.prune(model, std_ratio=1.0)
    for got, want in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_prune_leaves_the_model_bit_identical_when_a_late_layer_is_refused():
    """A dict naming an unknown layer, and a diverged last kernel: nothing assigned."""
    model = _model("float32", 1.0)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    with pytest.raises(ValueError, match=r"Received unknown names: \['nope'\]"):
        deephoyer_tf.prune(model, threshold={"fc1": 0.5, "nope": 0.1})
    kernel = keras.ops.convert_to_numpy(model.get_layer("fc2").kernel).copy()
    kernel[0, 0] = np.nan
    model.get_layer("fc2").kernel.assign(kernel)
    before[-2] = kernel
    with pytest.raises(ValueError, match="cannot threshold layer 'fc2'"):
        deephoyer_tf.prune(model, std_ratio=0.5)
    for got, want in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)


def test_threshold_pruning_refuses_before_the_first_epoch():
    """Before: the bad dict surfaced at epoch `at_epoch`, after training the earlier epochs."""
    model = _model("float32", 1.0)
    model.compile("sgd", "mse")
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.weights]
    epochs = []
    record = keras.callbacks.LambdaCallback(on_epoch_begin=lambda epoch, logs: epochs.append(epoch))
    x, y = np.ones((8, 16), "float32"), np.ones((8, 4), "float32")
    with pytest.raises(ValueError, match=r"Received unknown names: \['nope'\]"):
        model.fit(x, y, epochs=3, verbose=0, callbacks=[
            record, deephoyer_tf.ThresholdPruning(at_epoch=2, threshold={"nope": 0.1})])
    assert epochs == []
    for got, want in zip(model.weights, before):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(got), want)
