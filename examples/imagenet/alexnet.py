"""AlexNet as in the paper's ImageNet comparisons (Krizhevsky et al., 2012).

The original network, in the form of Caffe's ``bvlc_alexnet`` that the pruning
literature the paper compares with (Han et al. 2015 and later) counts its
weights on, not torchvision's narrower variant (64-192-384-256-256 filters)::

    input 227x227x3
    conv1  96 11x11 stride 4, valid  -> 55x55x96,  ReLU, maxpool 3/2 -> 27x27
    conv2 256  5x5  pad 2, groups 2  -> 27x27x256, ReLU, maxpool 3/2 -> 13x13
    conv3 384  3x3  pad 1            -> 13x13x384, ReLU
    conv4 384  3x3  pad 1, groups 2  -> 13x13x384, ReLU
    conv5 256  3x3  pad 1, groups 2  -> 13x13x256, ReLU, maxpool 3/2 -> 6x6
    flatten 9216 -> fc6 4096, ReLU, dropout 0.5
                 -> fc7 4096, ReLU, dropout 0.5
                 -> fc8 1000 (logits, no softmax)

Kernel weights per layer: conv1 34,848; conv2 307,200; conv3 884,736;
conv4 663,552; conv5 442,368; fc6 37,748,736; fc7 16,777,216; fc8 4,096,000;
60,954,656 in all (2.33M conv, 58.6M fc), the per-layer counts of Han et al.
(2015).

Choices:

* groups: conv2, conv4 and conv5 are split in two groups as in the original
  (which ran on two GPUs); the per-layer weight counts above depend on it.
  ``groups=1`` gives the single-tower variant (conv2 614,400, conv4
  1,327,104, conv5 884,736 weights). Keras ``Conv2D(groups=2)`` runs on CPU
  and GPU; `deephoyer_tf.shrink` cuts it group by group (Hoyer-Square's
  element-wise sparsity leaves few whole units to cut anyway).
* no local response normalization: it has no weights (the counts are
  unchanged), later work dropped it (Simonyan & Zisserman, 2014), and every
  layer here is one that `sparsity_report`, `shrink` and the TFLite export
  handle.
"""

INPUT_SIZE = 227

# The smallest square input for which every layer has a non-empty output:
# conv1 (11x11 / 4) -> 15, pool -> 7, pool -> 3, pool -> 1.
MIN_INPUT_SIZE = 67


def alexnet(
    keras_module,
    input_size=INPUT_SIZE,
    classes=1000,
    groups=2,
    dropout=0.5,
    kernel_regularizer=None,
    name="alexnet",
):
    """Builds AlexNet (logits output) with `keras_module` (`keras` or `tf_keras`).

    Args:
        keras_module: the Keras package to build with.
        input_size: side of the square RGB input, >= 67 (227 for the real
            network; smaller sizes only for smoke tests: fc6's input is then
            smaller than 9216).
        classes: number of outputs of fc8.
        groups: 2 (the original, two towers) or 1 (single tower).
        dropout: dropout rate after fc6 and fc7.
        kernel_regularizer: attached to every Conv2D and Dense kernel, or None
            (see also `deephoyer_tf.regularize`).
        name: model name.

    Returns:
        An uncompiled functional model ``(batch, s, s, 3) -> (batch, classes)``.

    Raises:
        ValueError: `input_size` below 67 or `groups` not 1 or 2.

    Example::

        model = alexnet(keras)
        model.get_layer("conv2").kernel.shape  # (5, 5, 48, 256)
    """
    if isinstance(input_size, bool) or not isinstance(input_size, int) or input_size < MIN_INPUT_SIZE:
        raise ValueError(
            f"Invalid value for argument `input_size`. Expected an int >= "
            f"{MIN_INPUT_SIZE}. Received: input_size={input_size!r}"
        )
    if groups not in (1, 2):
        raise ValueError(
            "Invalid value for argument `groups`. Expected 1 or 2. "
            f"Received: groups={groups!r}"
        )
    layers = keras_module.layers

    def conv(filters, size, stride=1, padding="same", conv_groups=1, name=None):
        return layers.Conv2D(
            filters, size, strides=stride, padding=padding, groups=conv_groups,
            activation="relu", kernel_regularizer=kernel_regularizer, name=name,
        )

    def dense(units, activation, name):
        return layers.Dense(
            units, activation=activation, kernel_regularizer=kernel_regularizer, name=name
        )

    inputs = keras_module.Input((input_size, input_size, 3), name="image")
    x = conv(96, 11, stride=4, padding="valid", name="conv1")(inputs)
    x = layers.MaxPooling2D(3, 2, name="pool1")(x)
    x = conv(256, 5, conv_groups=groups, name="conv2")(x)
    x = layers.MaxPooling2D(3, 2, name="pool2")(x)
    x = conv(384, 3, name="conv3")(x)
    x = conv(384, 3, conv_groups=groups, name="conv4")(x)
    x = conv(256, 3, conv_groups=groups, name="conv5")(x)
    x = layers.MaxPooling2D(3, 2, name="pool5")(x)
    x = layers.Flatten(name="flatten")(x)
    x = dense(4096, "relu", "fc6")(x)
    x = layers.Dropout(dropout, name="drop6")(x)
    x = dense(4096, "relu", "fc7")(x)
    x = layers.Dropout(dropout, name="drop7")(x)
    outputs = dense(classes, None, "fc8")(x)
    return keras_module.Model(inputs, outputs, name=name)
