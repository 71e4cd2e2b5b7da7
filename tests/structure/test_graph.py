"""Tests for deephoyer_tf.structure.graph: flattening a model into ops over tensors."""

import keras
import numpy as np
import pytest
import tf_keras

from deephoyer_tf.structure import graph as graph_lib

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _small(module):
    layers = module.layers
    x = module.Input((4, 4, 3))
    c = layers.Conv2D(6, 1, name="conv")(x)
    r = layers.ReLU(name="relu")(c)
    s = layers.Activation("softmax", name="soft")(r)
    g = layers.GlobalAveragePooling2D(keepdims=True, name="gap")(r)
    m = layers.Multiply(name="gate")([r, g])  # (4, 4, 6) * (1, 1, 6): broadcast merge
    one = layers.Conv2D(1, 1, name="one")(r)
    bad = layers.Multiply(name="bad")([r, one])  # (4, 4, 6) * (4, 4, 1): units differ
    a = layers.Add(name="add")([m, s, bad])
    f = layers.Flatten(name="flat")(a)
    y = layers.Dense(3, name="fc")(f)
    return module.Model(x, y, name="small")


@pytest.mark.parametrize("module", MODULES)
def test_kinds_types_and_shapes_of_a_small_functional_model(module):
    graph = graph_lib.build_graph(_small(module))
    kinds = {op.name: op.kind for op in graph.ops}
    assert kinds == {
        "conv": "kernel", "relu": "channelwise", "soft": "opaque", "gap": "channelwise",
        "gate": "merge", "one": "kernel", "bad": "opaque", "add": "merge", "flat": "reshape", "fc": "kernel",
    }
    ops = {op.name: op for op in graph.ops}
    assert [op.index for op in graph.ops] == list(range(len(graph.ops)))
    assert ops["gate"].type == "Multiply" and ops["soft"].type == "Activation"
    assert [t.shape for t in ops["gate"].inputs] == [(4, 4, 6), (1, 1, 6)]
    assert ops["flat"].outputs[0].shape == (96,) and ops["fc"].outputs[0].shape == (3,)
    assert [t.shape for t in graph.inputs] == [(4, 4, 3)] and graph.inputs[0].producer is None
    assert graph.outputs == ops["fc"].outputs
    assert [op.name for op in graph.kernel_ops()] == ["conv", "one", "fc"]
    relu_out = ops["relu"].outputs[0]
    assert relu_out.producer is ops["relu"] and relu_out.units == 6
    assert sorted(op.name for op in relu_out.consumers) == ["bad", "gap", "gate", "one", "soft"]
    # Data-flow order: every op's inputs are produced earlier.
    for op in graph.ops:
        assert all(t.producer is None or t.producer.index < op.index for t in op.inputs)


@pytest.mark.parametrize("module", MODULES)
def test_nested_models_are_inlined_with_prefixed_names(module):
    layers = module.layers
    inner = module.Sequential([module.Input((5,)), layers.Dense(4, name="a"), layers.ReLU(name="r")], name="inner")
    outer = module.Sequential([module.Input((5,)), inner, layers.Dense(2, activation="softmax", name="b")])
    graph = graph_lib.build_graph(outer)
    assert [(op.name, op.kind) for op in graph.ops] == [("inner/a", "kernel"), ("inner/r", "channelwise"), ("b", "kernel")]
    assert graph.ops[2].inputs[0] is graph.ops[1].outputs[0]
    assert graph_lib.mixes_units(graph.ops[2].layer) and not graph_lib.mixes_units(graph.ops[0].layer)


def test_subclassed_and_unbuilt_models_give_none():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.fc = keras.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    assert graph_lib.build_graph(net) is None
    assert graph_lib.build_graph(keras.Sequential([keras.layers.Dense(2)])) is None


def test_depthwise_is_channel_mapped_and_type_names():
    x = keras.Input((5, 5, 3))
    d = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, name="dw")(x)
    s = keras.layers.SeparableConv2D(4, 3, name="sep")(d)
    graph = graph_lib.build_graph(keras.Model(x, s))
    dw, sep = graph.ops
    assert graph_lib.is_channel_mapped(dw) and not graph_lib.is_channel_mapped(sep)
    assert (graph_lib.type_name(dw.layer), graph_lib.type_name(sep.layer)) == ("DepthwiseConv2D", "SeparableConv2D")
    assert dw.outputs[0].shape == (3, 3, 6)


def test_batchnorm_over_another_axis_is_opaque():
    x = keras.Input((4, 6))
    b1 = keras.layers.BatchNormalization(axis=-1, name="last")(x)
    b2 = keras.layers.BatchNormalization(axis=1, name="other")(b1)
    graph = graph_lib.build_graph(keras.Model(x, b2))
    assert [op.kind for op in graph.ops] == ["channelwise", "opaque"]


def test_concatenate_kinds_by_axis():
    a, b = keras.Input((4, 3)), keras.Input((4, 3))
    last = keras.layers.Concatenate(name="last")([a, b])
    other = keras.layers.Concatenate(axis=1, name="other")([a, b])
    graph = graph_lib.build_graph(keras.Model([a, b], [last, other]))
    assert {op.name: op.kind for op in graph.ops} == {"last": "concat", "other": "merge"}


def test_channels_first_kernel_layer_raises_exact_message():
    x = keras.Input((3, 8, 8))
    y = keras.layers.Conv2D(4, 3, data_format="channels_first", name="cf")(x)
    with pytest.raises(ValueError) as error:
        graph_lib.build_graph(keras.Model(x, y))
    assert str(error.value) == (
        "Layer 'cf' of type Conv2D uses data_format='channels_first' (output shape (4, 6, 6)); "
        "deephoyer_tf analyses channels-last models only."
    )
    assert graph_lib.channels_first(keras.layers.MaxPooling2D(data_format="channels_first"))
