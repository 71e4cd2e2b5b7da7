"""Tests for deephoyer_tf.structure.builtin_layers: Keras' own layers in the registry."""

import keras
import pytest
import tensorflow as tf
import tf_keras

from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import builtin_layers
from deephoyer_tf.structure import cutters
from deephoyer_tf.structure import registry

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _layouts(cls):
    return [(spec.attributes, spec.regularizer_attribute, spec.layout) for spec in registry.entry_for(cls).kernels]


@pytest.mark.parametrize("module", MODULES)
def test_kernel_layers_layouts_cutters_and_folds(module):
    layers = module.layers
    dense = registry.entry_for(layers.Dense)
    assert dense.layer_class is layers.Dense and dense.kind == "kernel" and dense.name == "Dense"
    assert _layouts(layers.Dense) == [(("kernel",), "kernel_regularizer", "in_out")]
    assert (dense.cutter, dense.fold, dense.elementwise_default) == (
        cutters.cut_kernel_layer, cutters.fold_dense, True,
    )
    for name in ("Conv1D", "Conv2D", "Conv3D"):
        entry = registry.entry_for(getattr(layers, name))
        assert _layouts(getattr(layers, name)) == [(("kernel",), "kernel_regularizer", "in_out")]
        assert (entry.kind, entry.cutter, entry.fold, entry.elementwise_default) == (
            "kernel", cutters.cut_kernel_layer, cutters.fold_conv, True,
        )
    transpose = registry.entry_for(layers.Conv2DTranspose)
    assert _layouts(layers.Conv2DTranspose) == [(("kernel",), "kernel_regularizer", "out_in")]
    assert (transpose.cutter, transpose.fold, transpose.elementwise_default) == (None, None, False)
    depthwise = registry.entry_for(layers.DepthwiseConv2D)
    assert _layouts(layers.DepthwiseConv2D) == [
        (("depthwise_kernel", "kernel"), "depthwise_regularizer", "depthwise")
    ]
    assert (depthwise.cutter, depthwise.elementwise_default) == (cutters.cut_depthwise, False)
    assert _layouts(layers.SeparableConv2D) == [
        (("depthwise_kernel",), "depthwise_regularizer", "depthwise"),
        (("pointwise_kernel",), "pointwise_regularizer", "in_out"),
    ]
    assert registry.entry_for(layers.SeparableConv1D).cutter is cutters.cut_separable
    assert _layouts(layers.Embedding) == [(("embeddings",), "embeddings_regularizer", "in_out")]
    assert registry.entry_for(layers.Embedding).cutter is cutters.cut_embedding


@pytest.mark.parametrize("module", MODULES)
def test_other_kinds_and_their_cutters(module):
    groups = [
        (builtin_layers.CHANNELWISE_LAYERS, "channelwise", cutters.cut_channelwise),
        (builtin_layers.RESHAPE_LAYERS, "reshape", cutters.cut_reshape),
        (builtin_layers.MERGE_LAYERS, "merge", cutters.copy_layer),
        (builtin_layers.CONCAT_LAYERS, "concat", cutters.copy_layer),
        (builtin_layers.WHOLE_LAYERS, "opaque", cutters.copy_layer),
    ]
    checked = 0
    for names, kind, cutter in groups:
        for name in names:
            cls = getattr(module.layers, name, None)
            if not isinstance(cls, type):
                continue
            entry = registry.entry_for(cls)
            assert (entry.layer_class, entry.kind, entry.cutter, entry.kernels) == (cls, kind, cutter, ()), name
            checked += 1
    # Every table name a flavour has is registered; most exist in both.
    assert checked >= 50
    for name in ("ReLU", "BatchNormalization", "MaxPooling2D", "Flatten", "Add", "Concatenate", "Softmax"):
        assert registry.entry_for(getattr(module.layers, name)) is not None


@pytest.mark.parametrize("module", MODULES)
def test_every_kernel_table_entry_is_registered_for_both_flavours(module):
    for name in builtin_layers.KERNEL_LAYERS:
        cls = getattr(module.layers, name, None)
        if isinstance(cls, type):
            assert registry.entry_for(cls).layer_class is cls
            assert name in registry.supported_types()
    assert registry.entry_for(module.layers.Dense) is not registry.entry_for(
        (tf_keras if module is keras else keras).layers.Dense
    )


def test_elementwise_operations():
    for cls in private_api.keras_elementwise_op_classes():
        entry = registry.entry_for(cls)
        assert (entry.kind, entry.cutter) == ("elementwise", cutters.call_again)
    op_lambda = registry.entry_for(private_api.tf_keras_op_lambda_class(tf_keras))
    assert (op_lambda.kind, op_lambda.cutter) == ("elementwise", cutters.call_again)
    assert op_lambda.applies is not None
    x = tf_keras.Input((3,))
    added = tf_keras.Model(x, x + 3.0).layers[-1]
    assert registry.entry_for(added) is op_lambda
    # A TFOpLambda of another TF function is not element-wise: no entry.
    summed = tf_keras.Model(x, tf.reduce_sum(x, axis=-1)).layers[-1]
    assert type(summed) is type(added) and registry.entry_for(summed) is None
