"""The registry entries of Keras' own layers, for Keras 3 now and tf_keras when it loads.

One table for both flavours: each row names a Keras layer class and what the
registry holds for it. The Keras 3 classes are registered at import; the
tf_keras classes of the same names when tf_keras is imported (see
`deephoyer_tf._internal.tf_keras_faces`), so that importing deephoyer_tf never
imports tf_keras.
"""

from __future__ import annotations

import keras

from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import tf_keras_faces
from deephoyer_tf.structure import attention
from deephoyer_tf.structure import cutters
from deephoyer_tf.structure.registry import KernelSpec
from deephoyer_tf.structure.registry import register_layer

_DENSE_LIKE = (KernelSpec("kernel", "kernel_regularizer", "in_out"),)
_TRANSPOSE = (KernelSpec("kernel", "kernel_regularizer", "out_in"),)
_DEPTHWISE = (KernelSpec(("depthwise_kernel", "kernel"), "depthwise_regularizer", "depthwise"),)
_SEPARABLE = (
    KernelSpec("depthwise_kernel", "depthwise_regularizer", "depthwise"),
    KernelSpec("pointwise_kernel", "pointwise_regularizer", "in_out"),
)
_EMBEDDING = (KernelSpec("embeddings", "embeddings_regularizer", "in_out"),)

# name: (kernels, cutter, fold, element-wise default)
KERNEL_LAYERS = {
    "Dense": (_DENSE_LIKE, cutters.cut_kernel_layer, cutters.fold_dense, True),
    "Conv1D": (_DENSE_LIKE, cutters.cut_kernel_layer, cutters.fold_conv, True),
    "Conv2D": (_DENSE_LIKE, cutters.cut_kernel_layer, cutters.fold_conv, True),
    "Conv3D": (_DENSE_LIKE, cutters.cut_kernel_layer, cutters.fold_conv, True),
    "Conv1DTranspose": (_TRANSPOSE, None, None, False),
    "Conv2DTranspose": (_TRANSPOSE, None, None, False),
    "Conv3DTranspose": (_TRANSPOSE, None, None, False),
    "DepthwiseConv1D": (_DEPTHWISE, cutters.cut_depthwise, None, False),
    "DepthwiseConv2D": (_DEPTHWISE, cutters.cut_depthwise, None, False),
    "SeparableConv1D": (_SEPARABLE, cutters.cut_separable, None, False),
    "SeparableConv2D": (_SEPARABLE, cutters.cut_separable, None, False),
    "Embedding": (_EMBEDDING, cutters.cut_embedding, None, False),
}

CHANNELWISE_LAYERS = (
    "Activation",
    "ReLU",
    "LeakyReLU",
    "ELU",
    "PReLU",
    "ThresholdedReLU",
    "Dropout",
    "SpatialDropout1D",
    "SpatialDropout2D",
    "SpatialDropout3D",
    "GaussianNoise",
    "GaussianDropout",
    "AlphaDropout",
    "ActivityRegularization",
    "Identity",
    "BatchNormalization",
    "MaxPooling1D",
    "MaxPooling2D",
    "MaxPooling3D",
    "AveragePooling1D",
    "AveragePooling2D",
    "AveragePooling3D",
    "GlobalMaxPooling1D",
    "GlobalMaxPooling2D",
    "GlobalMaxPooling3D",
    "GlobalAveragePooling1D",
    "GlobalAveragePooling2D",
    "GlobalAveragePooling3D",
    "ZeroPadding1D",
    "ZeroPadding2D",
    "ZeroPadding3D",
    "Cropping1D",
    "Cropping2D",
    "Cropping3D",
    "UpSampling1D",
    "UpSampling2D",
    "UpSampling3D",
)
RESHAPE_LAYERS = ("Flatten", "Reshape")
MERGE_LAYERS = ("Add", "Subtract", "Average", "Maximum", "Minimum", "Multiply")
CONCAT_LAYERS = ("Concatenate",)
# Layers `shrink` copies unchanged, keeping every unit of their inputs and outputs.
WHOLE_LAYERS = (
    "InputLayer",
    "Softmax",
    "LayerNormalization",
    "Rescaling",
    "Normalization",
    "Permute",
)


def register_builtin_layers(module):
    """Registers the layers of the Keras package `module` (`keras` or `tf_keras`)."""
    layers = module.layers

    def each(names):
        for name in names:
            cls = getattr(layers, name, None)
            if isinstance(cls, type):
                yield cls

    for name, (kernels, cutter, fold, default) in KERNEL_LAYERS.items():
        for cls in each([name]):
            register_layer(cls, kernels=kernels, cutter=cutter, fold=fold, default=default)
    for cls in each(CHANNELWISE_LAYERS):
        register_layer(cls, kind="channelwise", cutter=cutters.cut_channelwise)
    for cls in each(RESHAPE_LAYERS):
        register_layer(cls, kind="reshape", cutter=cutters.cut_reshape)
    for cls in each(MERGE_LAYERS):
        register_layer(cls, kind="merge", cutter=cutters.copy_layer)
    for cls in each(CONCAT_LAYERS):
        register_layer(cls, kind="concat", cutter=cutters.copy_layer)
    for cls in each(WHOLE_LAYERS):
        register_layer(cls, kind="opaque", cutter=cutters.copy_layer)


def register_transformer_layers(module):
    """`EinsumDense` and `MultiHeadAttention` (see `deephoyer_tf.structure.attention`)."""
    layers = module.layers
    einsum = getattr(layers, "EinsumDense", None) or getattr(
        getattr(layers, "experimental", None), "EinsumDense", None
    )
    if isinstance(einsum, type):
        register_layer(
            einsum,
            kernels=(KernelSpec("kernel", "kernel_regularizer", "einsum"),),
            specs=attention.einsum_specs,
            flow=attention.einsum_flow,
            cutter=attention.cut_einsum_dense,
            fold=cutters.fold_dense,
            describe=attention.describe_einsum,
            default=True,
        )
    mha = getattr(layers, "MultiHeadAttention", None)
    if isinstance(mha, type):
        register_layer(
            mha,
            kernels=attention.ATTENTION_KERNELS,
            specs=attention.attention_specs,
            flow=attention.attention_flow,
            cutter=attention.cut_attention,
            describe=attention.describe_attention,
            default=True,
        )


def register_elementwise_operations(module):
    """``x + 3.0``, ``x * gate``: Keras 3 operations, tf_keras `TFOpLambda` layers."""
    if module is keras:
        # Any other operation written in a functional model (``x[:, 0]``,
        # ``ops.transpose(x)``): weightless, kept whole, called again.
        register_layer(
            private_api.keras_operation_class(),
            kind="opaque",
            cutter=cutters.call_again,
            applies=lambda operation: not isinstance(operation, keras.layers.Layer),
        )
        for cls in private_api.keras_elementwise_op_classes():
            register_layer(cls, kind="elementwise", cutter=cutters.call_again)
        return
    register_layer(
        private_api.tf_keras_op_lambda_class(module),
        kind="elementwise",
        cutter=cutters.call_again,
        applies=lambda layer: private_api.tf_op_lambda_symbol(layer)
        in private_api.TF_KERAS_ELEMENTWISE_SYMBOLS,
    )


def _register_flavour(module):
    register_builtin_layers(module)
    register_transformer_layers(module)
    register_elementwise_operations(module)


_register_flavour(keras)
tf_keras_faces.on_tf_keras(_register_flavour)
