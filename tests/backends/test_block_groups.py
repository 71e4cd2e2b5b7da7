"""Group-HS and group lasso on 1xc blocks (``groups="blocks"``), against NumPy, on the running backend."""

import keras
import numpy as np
import pytest

import deephoyer_tf


def _block_norms(kernel_in_out, block):
    """L2 norm of each (r outputs x c inputs) block of a Dense kernel (in, out), zero-padded."""
    w = kernel_in_out.T  # (out, in), TFLite's orientation
    r, c = block
    w = np.pad(w, ((0, (-w.shape[0]) % r), (0, (-w.shape[1]) % c)))
    blocks = w.reshape(w.shape[0] // r, r, w.shape[1] // c, c)
    return np.sqrt((blocks.astype(np.float64) ** 2).sum(axis=(1, 3)))


@pytest.mark.parametrize("block", [(1, 4), (2, 3), (1, 16)])
def test_values_against_numpy(block):
    w = np.random.default_rng(0).normal(size=(10, 6)).astype("float32")
    w[:4, 0] = 0  # one dead 1x4 block
    norms = _block_norms(w, block)
    hs = deephoyer_tf.GroupHoyerSquare(0.5, groups="blocks", block_size=block)
    lasso = deephoyer_tf.GroupLasso(0.5, groups="blocks", block_size=block)
    got_hs = float(keras.ops.convert_to_numpy(hs(keras.ops.convert_to_tensor(w))))
    got_lasso = float(keras.ops.convert_to_numpy(lasso(keras.ops.convert_to_tensor(w))))
    np.testing.assert_allclose(got_hs, 0.5 * norms.sum() ** 2 / (norms**2).sum(), rtol=1e-5)
    np.testing.assert_allclose(got_lasso, 0.5 * norms.sum(), rtol=1e-5)


def test_gradient_is_finite_with_dead_blocks_and_zero_on_them():
    w = np.random.default_rng(1).normal(size=(8, 3)).astype("float32")
    w[:4, :] = 0  # first 1x4 block of every output
    variable = keras.Variable(w)
    hs = deephoyer_tf.GroupHoyerSquare(1.0, groups="blocks")
    if keras.backend.backend() == "tensorflow":
        import tensorflow as tf

        with tf.GradientTape() as tape:
            loss = hs(variable)
        grad = tape.gradient(loss, variable.value).numpy()
    elif keras.backend.backend() == "jax":
        import jax

        grad = np.asarray(jax.grad(lambda v: hs(v))(variable.value))
    else:
        import torch

        t = torch.tensor(w, requires_grad=True)
        hs(t).backward()
        grad = t.grad.numpy()
    assert np.all(np.isfinite(grad)) and np.all(grad[:4] == 0)


def test_config_round_trip_and_argument_errors():
    reg = deephoyer_tf.GroupHoyerSquare(0.1, groups="blocks", block_size=(1, 16))
    again = deephoyer_tf.GroupHoyerSquare.from_config(reg.get_config())
    assert again.get_config() == reg.get_config() and again.block_size == (1, 16)
    restored = keras.regularizers.deserialize(keras.regularizers.serialize(reg))
    assert restored.get_config()["block_size"] == (1, 16) or restored.get_config()["block_size"] == [1, 16]
    assert deephoyer_tf.GroupLasso(0.1, groups="blocks").block_size == (1, 4)
    with pytest.raises(ValueError, match="Argument `block_size` applies only with groups='blocks'"):
        deephoyer_tf.GroupHoyerSquare(0.1, groups="outputs", block_size=(1, 4))
    with pytest.raises(ValueError, match="Expected two ints >= 1. Received: block_size=\\(0, 4\\)"):
        deephoyer_tf.GroupHoyerSquare(0.1, groups="blocks", block_size=(0, 4))


def test_regularize_attaches_blocks_to_dense_and_refuses_depthwise():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((8,)), keras.layers.Dense(5, name="fc")])
    reg = deephoyer_tf.regularize(model, deephoyer_tf.GroupHoyerSquare(1.0, groups="blocks"))
    w = np.array(reg.get_layer("fc").kernel)
    norms = _block_norms(w, (1, 4))
    np.testing.assert_allclose(float(keras.ops.convert_to_numpy(sum(reg.losses))),
                               norms.sum() ** 2 / (norms**2).sum(), rtol=1e-5)
    conv = keras.Sequential([keras.Input((5, 5, 4)), keras.layers.DepthwiseConv2D(3, name="dw"),
                             keras.layers.Conv2D(4, 1, name="pw")])
    with pytest.raises(ValueError, match="groups='blocks' cannot group the kernels of layer 'dw'"):
        deephoyer_tf.regularize(conv, deephoyer_tf.GroupHoyerSquare(1.0, groups="blocks"))
