"""Tests for deephoyer_tf.structure.liveness: kernel connectivity and live units."""

import keras
import numpy as np
import pytest

from deephoyer_tf.structure import graph as graph_lib
from deephoyer_tf.structure import liveness


def _op(layer, shape, seed=0, zero_fraction=0.6):
    """The single op of a model (Input(shape) -> layer), its kernels randomly sparse."""
    x = keras.Input(shape)
    model = keras.Model(x, layer(x))
    rng = np.random.default_rng(seed)
    weights = []
    for w in model.get_weights():
        w = rng.standard_normal(w.shape).astype("float32")
        if w.ndim >= 2:
            w[rng.random(w.shape) < zero_fraction] = 0.0
        weights.append(w)
    model.set_weights(weights)
    (op,) = graph_lib.build_graph(model).ops
    return op


def test_dense_and_conv_connectivity_is_any_nonzero_weight():
    op = _op(keras.layers.Dense(5), (4,))
    kernel = op.layer.kernel.numpy()
    np.testing.assert_array_equal(liveness.kernel_connectivity(op), kernel != 0)
    op = _op(keras.layers.Conv2D(5, 3), (6, 6, 4), zero_fraction=0.9)
    kernel = op.layer.kernel.numpy()
    got = liveness.kernel_connectivity(op)
    assert got.shape == (4, 5) and got.dtype == bool
    np.testing.assert_array_equal(got, np.any(kernel != 0, axis=(0, 1)))
    assert not got.all()


def test_grouped_conv_is_block_diagonal():
    op = _op(keras.layers.Conv2D(4, 1, groups=2), (3, 3, 6), zero_fraction=0.0)
    got = liveness.kernel_connectivity(op)
    want = np.zeros((6, 4), bool)
    want[:3, :2] = want[3:, 2:] = True
    np.testing.assert_array_equal(got, want)


def test_depthwise_unit_i_reaches_i_times_m_plus_k():
    op = _op(keras.layers.DepthwiseConv2D(3, depth_multiplier=2), (5, 5, 3), zero_fraction=0.95)
    nz = np.any(op.layer.kernel.numpy() != 0, axis=(0, 1))  # (3, 2)
    want = np.zeros((3, 6), bool)
    for i in range(3):
        for k in range(2):
            want[i, i * 2 + k] = nz[i, k]
    np.testing.assert_array_equal(liveness.kernel_connectivity(op), want)


def test_separable_is_the_boolean_product():
    op = _op(keras.layers.SeparableConv2D(4, 3, depth_multiplier=2), (5, 5, 3), zero_fraction=0.7)
    depthwise = np.any(op.layer.depthwise_kernel.numpy() != 0, axis=(0, 1))  # (3, 2)
    pointwise = np.any(op.layer.pointwise_kernel.numpy() != 0, axis=(0, 1))  # (6, 4)
    first = np.zeros((3, 6), bool)
    first[np.repeat(np.arange(3), 2), np.arange(6)] = depthwise.reshape(-1)
    want = (first.astype(int) @ pointwise.astype(int)) > 0
    np.testing.assert_array_equal(liveness.kernel_connectivity(op), want)


def test_conv_transpose_layout_is_transposed():
    op = _op(keras.layers.Conv2DTranspose(5, 3), (4, 4, 2), zero_fraction=0.9)
    kernel = op.layer.kernel.numpy()  # (k, k, out, in)
    np.testing.assert_array_equal(liveness.kernel_connectivity(op), np.any(kernel != 0, axis=(0, 1)).T)


def _chain():
    """Dense 3 -> 4 -> 2; hidden unit 1 has no outgoing weight, unit 2 no incoming one."""
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(4, name="fc1"), keras.layers.Dense(2, name="fc2")]
    )
    w1 = np.ones((3, 4), "float32")
    w1[:, 2] = 0.0
    w1[0, :] = 0.0  # input 0 reaches nothing
    w2 = np.ones((4, 2), "float32")
    w2[1, :] = 0.0
    model.set_weights([w1, np.ones(4, "float32"), w2, np.ones(2, "float32")])
    return model


def test_analysis_of_a_tiny_chain_with_dead_units():
    graph = graph_lib.build_graph(_chain())
    analysis = liveness.Analysis(graph)
    fc1, fc2 = graph.ops
    hidden = fc1.outputs[0]
    np.testing.assert_array_equal(analysis.fwd[hidden], [True, True, False, True])
    np.testing.assert_array_equal(analysis.used[hidden], [True, False, True, True])
    np.testing.assert_array_equal(analysis.live(hidden), [True, False, False, True])
    np.testing.assert_array_equal(analysis.live_outputs(fc1), [True, False, False, True])
    np.testing.assert_array_equal(analysis.live_inputs(fc1), [False, True, True])
    np.testing.assert_array_equal(analysis.live_inputs(fc2), [True, False, False, True])
    np.testing.assert_array_equal(analysis.live_outputs(fc2), [True, True])
    assert set(analysis.connectivity) == {fc1, fc2}


def test_softmax_kernel_mixes_units_in_liveness():
    model = keras.Sequential(
        [keras.Input((3,)), keras.layers.Dense(3, name="fc1"), keras.layers.Dense(2, activation="softmax", name="fc2")]
    )
    w2 = np.zeros((3, 2), "float32")
    w2[0, 0] = 1.0  # output 1 has no incoming weight, but softmax mixes it with output 0
    model.set_weights([np.ones((3, 3), "float32"), np.zeros(3, "float32"), w2, np.zeros(2, "float32")])
    graph = graph_lib.build_graph(model)
    analysis = liveness.Analysis(graph)
    np.testing.assert_array_equal(analysis.live_outputs(graph.ops[1]), [True, True])
    np.testing.assert_array_equal(analysis.live(graph.ops[0].outputs[0]), [True, False, False])


def test_channel_need_and_outputs_of_a_depthwise_op():
    op = _op(keras.layers.DepthwiseConv2D(1, depth_multiplier=2), (2, 2, 3))
    np.testing.assert_array_equal(liveness.channel_need(op, [0, 0, 1, 0, 0, 0]), [False, True, False])
    np.testing.assert_array_equal(liveness.channel_outputs(op, [True, False, True]), [1, 1, 0, 0, 1, 1])


@pytest.mark.parametrize("shape", [(3,), (2, 3)])
def test_concat_offsets(shape):
    a, b = keras.Input(shape), keras.Input(shape[:-1] + (5,))
    graph = graph_lib.build_graph(keras.Model([a, b], keras.layers.Concatenate()([a, b])))
    np.testing.assert_array_equal(liveness.concat_offsets(graph.ops[0]), [0, 3, 8])
