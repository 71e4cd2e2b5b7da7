"""The measures' gradients in float16 and bfloat16: finite at any strength (issue 20, point 8).

Before: the gradient was computed in float32 and cast back to the weights'
dtype, so with float16 weights near 1e-6 and strength 1 it was inf
(Hoyer-Square's is about 2e6 there; float16 stops at 65,504). Now it is the
float32 gradient saturated at the dtype's largest finite value.
"""

import keras
import numpy as np
import pytest

import deephoyer_tf

BACKEND = keras.backend.backend()
FINITE_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}
REGULARIZERS = {
    "hoyer": lambda: deephoyer_tf.Hoyer(1.0),
    "hoyer_square": lambda: deephoyer_tf.HoyerSquare(1.0),
    "group_hs": lambda: deephoyer_tf.GroupHoyerSquare(1.0, input_strength=1.0),
}


def _gradient(fn, w, dtype):
    """d fn / d w for `w` held in `dtype`, as float64 NumPy, with the running backend's autodiff."""
    if BACKEND == "jax":
        import jax
        import jax.numpy as jnp

        grad = jax.grad(fn)(jnp.asarray(w, dtype=dtype))
        assert str(grad.dtype) == dtype
        return np.asarray(grad.astype(jnp.float32), np.float64)
    if BACKEND == "torch":
        import torch

        t = torch.tensor(w, dtype=torch.float32).to(getattr(torch, dtype)).requires_grad_()
        fn(t).backward()
        assert str(t.grad.dtype) == f"torch.{dtype}"
        return t.grad.float().numpy().astype(np.float64)
    import tensorflow as tf

    v = tf.Variable(tf.cast(w, dtype))
    with tf.GradientTape() as tape:
        value = fn(v)
    grad = tape.gradient(value, v)
    assert grad.dtype.name == dtype
    return tf.cast(grad, tf.float64).numpy()


@pytest.mark.parametrize("name", sorted(REGULARIZERS))
@pytest.mark.parametrize("dtype, scale", [("float16", 1e-6), ("float16", 1e-3), ("bfloat16", 1e-37)])
def test_gradient_is_finite_and_the_float32_one_saturated(name, dtype, scale):
    rng = np.random.default_rng(0)
    w32 = (rng.normal(size=(7, 5)) * scale).astype(np.float32)
    # w as the dtype holds it, exactly, in float32
    if BACKEND == "tensorflow":
        import tensorflow as tf

        w = tf.cast(tf.cast(w32, dtype), tf.float32).numpy()
    else:
        w = keras.ops.convert_to_numpy(keras.ops.cast(keras.ops.cast(w32, dtype), "float32"))
    assert np.count_nonzero(w) > 25
    regularizer = REGULARIZERS[name]()
    got = _gradient(regularizer, w, dtype)
    reference = _gradient(regularizer, w, "float32")  # the float32 computation, unsaturated
    bound = FINITE_MAX[dtype]
    assert np.all(np.isfinite(got)), (name, dtype, got)
    big = np.abs(reference) > bound
    if dtype == "float16" and scale == 1e-6:
        assert big.any() or np.isinf(reference).any()  # the case the saturation is for
    np.testing.assert_array_equal(got[big], np.sign(reference[big]) * bound)
    # elsewhere, the float32 gradient rounded to the dtype
    np.testing.assert_allclose(got[~big], reference[~big], rtol=2 ** -7, atol=0)
