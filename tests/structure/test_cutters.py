"""Tests for deephoyer_tf.structure.cutters: how one layer is cut, against NumPy slicing."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deephoyer_tf.structure import cutters
from deephoyer_tf.structure.cutters import Cut

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _built(layer, input_shape, seed=0):
    layer.build((None,) + tuple(input_shape))
    rng = np.random.default_rng(seed)
    layer.set_weights([rng.standard_normal(w.shape).astype("float32") for w in layer.get_weights()])
    return layer


def _cut(keep_in, keep_out, in_shape=None, out_shape=None, delta=None):
    keep_in, keep_out = np.asarray(keep_in, bool), np.asarray(keep_out, bool)
    return Cut(
        [keep_in], [keep_out],
        [in_shape or (len(keep_in),)], [out_shape or (len(keep_out),)],
        None if delta is None else np.asarray(delta, "float32"),
    )


@pytest.mark.parametrize("module", MODULES)
def test_cut_dense_slices_kernel_and_bias_and_adds_delta(module):
    layer = _built(module.layers.Dense(4, name="fc"), (5,))
    kernel, bias = layer.get_weights()
    keep_in, keep_out = [1, 0, 1, 1, 0], [0, 1, 1, 0]
    config, weights = cutters.cut_kernel_layer(layer, _cut(keep_in, keep_out, delta=[0.5, -1.0]))
    assert config["units"] == 2 and config["name"] == "fc"
    np.testing.assert_array_equal(weights[0], kernel[[0, 2, 3]][:, [1, 2]])
    np.testing.assert_allclose(weights[1], bias[[1, 2]] + [0.5, -1.0])
    small = type(layer).from_config(config)
    small.build((None, 3))
    small.set_weights(weights)  # the shapes fit the new config


@pytest.mark.parametrize("module", MODULES)
def test_cut_conv_slices_the_last_two_axes(module):
    layer = _built(module.layers.Conv2D(6, 3, name="conv"), (5, 5, 4))
    kernel, bias = layer.get_weights()
    keep_in, keep_out = [0, 1, 0, 1], [1, 1, 0, 0, 0, 1]
    config, (k, b) = cutters.cut_kernel_layer(layer, _cut(keep_in, keep_out))
    assert config["filters"] == 3
    np.testing.assert_array_equal(k, kernel[:, :, [1, 3]][..., [0, 1, 5]])
    np.testing.assert_array_equal(b, bias[[0, 1, 5]])


@pytest.mark.parametrize("module", MODULES)
def test_cut_kernel_layer_without_bias_gets_one_only_for_a_nonzero_delta(module):
    layer = _built(module.layers.Dense(3, use_bias=False), (2,))
    (kernel,) = layer.get_weights()
    config, weights = cutters.cut_kernel_layer(layer, _cut([1, 1], [1, 0, 1], delta=[0.0, 0.0]))
    assert config["use_bias"] is False and len(weights) == 1
    np.testing.assert_array_equal(weights[0], kernel[:, [0, 2]])
    config, weights = cutters.cut_kernel_layer(layer, _cut([1, 1], [1, 0, 1], delta=[2.0, 0.0]))
    assert config["use_bias"] is True
    np.testing.assert_array_equal(weights[1], [2.0, 0.0])


def test_cut_kernel_layer_without_use_bias_argument_exact_message():
    class NoBias:
        name = "custom"

        def get_weights(self):
            return [np.ones((2, 2), "float32")]

        def get_config(self):
            return {"units": 2}

    with pytest.raises(ValueError) as error:
        cutters.cut_kernel_layer(NoBias(), _cut([1, 1], [1, 1], delta=[1.0, 0.0]))
    assert str(error.value) == (
        "shrink() must fold constants into a bias of layer 'custom', which has no bias and "
        "no `use_bias` argument; register the layer with a cutter of its own, or without a "
        "`fold` function."
    )


@pytest.mark.parametrize("module", MODULES)
def test_cut_depthwise_keeps_whole_channels(module):
    layer = _built(module.layers.DepthwiseConv2D(3, depth_multiplier=2), (5, 5, 4))
    kernel, bias = layer.get_weights()
    assert kernel.shape == (3, 3, 4, 2) and bias.shape == (8,)
    keep_in = np.array([1, 0, 0, 1], bool)
    config, (k, b) = cutters.cut_depthwise(layer, _cut(keep_in, np.repeat(keep_in, 2)))
    assert config == layer.get_config()
    np.testing.assert_array_equal(k, kernel[:, :, [0, 3]])
    np.testing.assert_array_equal(b, bias[[0, 1, 6, 7]])  # outputs c * 2 + k of c in {0, 3}


@pytest.mark.parametrize("module", MODULES)
def test_cut_separable_slices_depthwise_pointwise_and_bias(module):
    layer = _built(module.layers.SeparableConv2D(5, 3, depth_multiplier=2), (5, 5, 3))
    depthwise, pointwise, bias = layer.get_weights()
    keep_in, keep_out = np.array([0, 1, 1], bool), np.array([1, 0, 0, 1, 1], bool)
    config, (d, p, b) = cutters.cut_separable(layer, _cut(keep_in, keep_out, delta=[1.0, 2.0, 3.0]))
    assert config["filters"] == 3
    np.testing.assert_array_equal(d, depthwise[:, :, [1, 2]])
    np.testing.assert_array_equal(p, pointwise[:, :, [2, 3, 4, 5]][..., [0, 3, 4]])
    np.testing.assert_allclose(b, bias[[0, 3, 4]] + [1.0, 2.0, 3.0])


@pytest.mark.parametrize("module", MODULES)
def test_cut_channelwise_slices_weights_spanning_the_units(module):
    layer = _built(module.layers.BatchNormalization(), (3, 3, 5))
    keep = np.array([1, 0, 1, 1, 0], bool)
    config, weights = cutters.cut_channelwise(layer, _cut(keep, keep, (3, 3, 5), (3, 3, 5)))
    assert config == layer.get_config()
    assert len(weights) == 4
    for got, want in zip(weights, layer.get_weights()):
        np.testing.assert_array_equal(got, want[[0, 2, 3]])
    prelu = _built(module.layers.PReLU(), (2, 5))  # alpha (2, 5): last axis spans the units
    _, (alpha,) = cutters.cut_channelwise(prelu, _cut(keep, keep, (2, 5), (2, 5)))
    np.testing.assert_array_equal(alpha, prelu.get_weights()[0][:, [0, 2, 3]])


@pytest.mark.parametrize("module", MODULES)
def test_cut_reshape(module):
    flatten = module.layers.Flatten(name="flat")
    keep_in = np.array([1, 0, 1], bool)
    cut = _cut(keep_in, np.tile(keep_in, 4), (2, 2, 3), (12,))
    assert cutters.cut_reshape(flatten, cut) == (flatten.get_config(), [])
    reshape = module.layers.Reshape((12,))
    config, _ = cutters.cut_reshape(reshape, cut)
    assert tuple(config["target_shape"]) == (8,)  # 4 positions x 2 kept units
    reshape = module.layers.Reshape((4, 3))
    config, _ = cutters.cut_reshape(reshape, _cut(keep_in, keep_in, (2, 2, 3), (4, 3)))
    assert tuple(config["target_shape"]) == (4, 2)


def test_copy_layer_and_call_again():
    add = keras.layers.Add(name="add")
    assert cutters.copy_layer(add, None) == (add.get_config(), [])
    assert cutters.call_again(add, None) == (None, None)


def test_fold_dense_is_x_i_times_w_ij():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 2, 3, 4))
    kernel = rng.standard_normal((4, 5))
    got = cutters.fold_dense(None, x, kernel).reshape(1, 2, 3, 20)  # what shrink reads
    for i in range(4):
        for j in range(5):
            np.testing.assert_allclose(got[..., i * 5 + j], x[..., i] * kernel[i, j])
    # Summed over the inputs i, it is x @ W.
    np.testing.assert_allclose(got.reshape(1, 2, 3, 4, 5).sum(axis=-2), x @ kernel, rtol=1e-12)


def test_fold_dense_has_the_documented_shape():
    x = np.ones((1, 2, 3, 4))
    assert cutters.fold_dense(None, x, np.ones((4, 5))).shape == (1, 2, 3, 20)


@pytest.mark.parametrize(
    "make, shape",
    [
        (lambda: keras.layers.Conv2D(3, 3, strides=2, padding="same", use_bias=False), (7, 7, 2)),
        (lambda: keras.layers.Conv1D(3, 3, padding="causal", dilation_rate=2, use_bias=False), (9, 2)),
        (lambda: keras.layers.Conv3D(2, 2, use_bias=False), (4, 4, 4, 3)),
    ],
    ids=["conv2d", "conv1d_causal", "conv3d"],
)
def test_fold_conv_sums_to_the_convolution(make, shape):
    layer = _built(make(), shape, seed=4)
    (kernel,) = layer.get_weights()
    x = np.random.default_rng(5).standard_normal((1,) + shape).astype("float32")
    got = cutters.fold_conv(layer, x, kernel)
    units, n = kernel.shape[-2:]
    want = np.asarray(layer(tf.constant(x)))
    assert got.shape == want.shape[:-1] + (units * n,)
    np.testing.assert_allclose(got.reshape(want.shape[:-1] + (units, n)).sum(axis=-2), want, rtol=1e-4, atol=1e-5)
    # Channel i * n + j alone: the convolution of input unit i with kernel slice [..., i, j].
    only = np.zeros_like(x)
    only[..., 1] = x[..., 1]
    np.testing.assert_allclose(
        got[..., 1 * n : 2 * n], np.asarray(layer(tf.constant(only))), rtol=1e-4, atol=1e-5
    )
