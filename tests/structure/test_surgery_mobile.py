"""`shrink` on depthwise and separable convolutions and the networks made of them."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _randomize(model, dead_fraction=0.3, seed=0):
    """Random BatchNorm statistics (nonzero constants) and 30% of the Conv2D filters dead."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        kind = type(layer).__name__
        if kind == "BatchNormalization" and len(weights) == 4:
            gamma, beta, mean, var = weights
            layer.set_weights([
                rng.uniform(0.5, 1.5, gamma.shape), rng.normal(0, 0.5, beta.shape),
                rng.normal(0, 0.1, mean.shape), rng.uniform(0.5, 1.5, var.shape),
            ])
        elif kind == "Conv2D":
            kernel = weights[0]
            kernel[..., rng.random(kernel.shape[-1]) < dead_fraction] = 0.0
            weights[0] = kernel
            if len(weights) > 1:
                weights[1] = rng.normal(0, 0.1, weights[1].shape)
            layer.set_weights(weights)
    return model


def _set_bn_channel(layer, channel, beta):
    """BatchNormalization of `channel` made the identity plus `beta`."""
    gamma, old_beta, mean, var = layer.get_weights()
    gamma[channel], old_beta[channel], mean[channel], var[channel] = 1.0, beta, 0.0, 1.0
    layer.set_weights([gamma, old_beta, mean, var])


def _check_exact(model, small, x, rtol=1e-4):
    want, got = np.asarray(model(x)), np.asarray(small(x))
    assert np.abs(got - want).max() <= rtol * np.abs(want).max()


APPLICATIONS = [
    ("MobileNet", {}),
    ("MobileNetV2", {}),
    ("MobileNetV3Small", {}),
    ("MobileNetV3Large", {}),
    ("EfficientNetB0", {}),
    ("EfficientNetV2B0", {}),
]


@pytest.mark.slow
@pytest.mark.parametrize("module", FLAVOURS)
@pytest.mark.parametrize("name, kwargs", APPLICATIONS, ids=[a[0] for a in APPLICATIONS])
def test_keras_applications_shrink_exactly(module, name, kwargs):
    constructor = getattr(module.applications, name, None)
    if constructor is None:
        pytest.skip(f"{module.__name__}.applications has no {name}")
    model = _randomize(constructor(input_shape=(32, 32, 3), weights=None, classes=10, **kwargs))
    x = np.random.default_rng(1).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    small = deephoyer_tf.shrink(model)
    assert small.count_params() < 0.9 * model.count_params()
    _check_exact(model, small, x)
    summary = small.shrink_summary
    assert summary.folded > 0 and sum(i for i, _ in summary.removed.values()) > 0


def _block(module, depth_multiplier=1, padding="same"):
    """conv (8 filters) -> BN -> ReLU6 -> [pad] -> depthwise -> BN -> ReLU6 -> conv 1x1 -> GAP -> Dense."""
    layers = module.layers
    inp = module.Input((8, 8, 3))
    x = layers.Conv2D(8, 1, name="expand")(inp)
    x = layers.BatchNormalization(name="bn1")(x)
    x = layers.ReLU(6.0, name="relu1")(x)
    if padding == "pad":
        x = layers.ZeroPadding2D(1, name="pad")(x)
        x = layers.DepthwiseConv2D(3, depth_multiplier=depth_multiplier, name="dw")(x)
    else:
        x = layers.DepthwiseConv2D(3, padding=padding, depth_multiplier=depth_multiplier, name="dw")(x)
    x = layers.BatchNormalization(name="bn2")(x)
    x = layers.ReLU(6.0, name="relu2")(x)
    x = layers.Conv2D(6, 1, name="project")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    model = module.Model(inp, layers.Dense(4, name="head")(x))
    rng = np.random.default_rng(3)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return _randomize(model, dead_fraction=0.0)


@pytest.mark.parametrize("multiplier", [1, 2])
@pytest.mark.parametrize("module", FLAVOURS)
def test_a_channel_killed_by_its_producer_leaves_the_depthwise_layer(module, multiplier):
    # valid padding: a constant channel stays uniform through the depthwise filter
    model = _block(module, multiplier, padding="valid")
    kernel, bias = model.get_layer("expand").get_weights()
    kernel[..., [1, 5]] = 0.0  # expand filters 1 and 5 dead: channels 1, 5 constant
    model.get_layer("expand").set_weights([kernel, bias])
    small = deephoyer_tf.shrink(model)
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    _check_exact(model, small, x)
    assert small.get_layer("expand").get_weights()[0].shape[-1] == 6
    dw = small.get_layer("dw").get_weights()
    assert dw[0].shape == (3, 3, 6, multiplier) and dw[1].shape == (6 * multiplier,)
    assert small.get_layer("project").get_weights()[0].shape == (1, 1, 6 * multiplier, 6)
    assert small.shrink_summary.removed["expand"] == (0, 2)
    assert small.shrink_summary.removed["dw"] == (2, 2 * multiplier)


@pytest.mark.parametrize("module", FLAVOURS)
def test_a_channel_killed_by_its_own_zero_depthwise_filter(module):
    model = _block(module)
    kernel, bias = model.get_layer("dw").get_weights()
    kernel[..., 3, :] = 0.0  # depthwise filter 3 all zero: output 3 is a constant,
    bias[3] = 1.0
    model.get_layer("dw").set_weights([kernel, bias])
    _set_bn_channel(model.get_layer("bn2"), 3, beta=2.0)  # relu6(1 + 2) = 3, not 0
    small = deephoyer_tf.shrink(model)
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    _check_exact(model, small, x)
    # Channel 3 leaves the depthwise layer, its producer and its consumer; its
    # constant (bias -> BN -> ReLU6) is folded into `project`'s bias.
    assert small.get_layer("dw").get_weights()[0].shape == (3, 3, 7, 1)
    assert small.get_layer("expand").get_weights()[0].shape[-1] == 7
    assert small.shrink_summary.folded >= 1


@pytest.mark.parametrize("module", FLAVOURS)
def test_a_constant_through_zero_padding_is_kept_and_reported(module):
    """Zero padding makes a constant channel vary by position: not foldable, so kept."""
    model = _block(module, padding="pad")
    kernel, bias = model.get_layer("dw").get_weights()
    kernel[..., 3, :] = 0.0
    kernel[..., 2, :] = 0.1  # 3 * 0.9 inside, 3 * 0.4 in a corner: varies, stays in (0, 6)
    bias[2] = 0.0
    model.get_layer("dw").set_weights([kernel, bias])
    expand, expand_bias = model.get_layer("expand").get_weights()
    expand[..., 2] = 0.0  # constant channel 2 (relu6(1 + 2) = 3) enters the zero padding
    expand_bias[2] = 1.0
    model.get_layer("expand").set_weights([expand, expand_bias])
    _set_bn_channel(model.get_layer("bn1"), 2, beta=2.0)
    _set_bn_channel(model.get_layer("bn2"), 2, beta=0.0)
    small = deephoyer_tf.shrink(model)
    x = np.random.default_rng(2).normal(size=(3, 8, 8, 3)).astype("float32")
    _check_exact(model, small, x)
    summary = small.shrink_summary
    assert ("project", 2) in summary.kept_for_exactness_units
    assert summary.removed["expand"] == (0, 1)  # channel 3 (zero depthwise filter) only: 2 is kept
    assert "dead units kept for exactness (not foldable): 1" in str(summary)
    assert summary.kept_for_exactness_reasons == {
        "project": "their constant values reach it differently at different positions "
        "(zero padding or image borders), so no bias can stand for them"
    }
    assert "project: 1 input units kept: their constant values" in str(summary)


@pytest.mark.parametrize("module", FLAVOURS)
def test_squeeze_and_excitation_gating_is_coupled_channel_by_channel(module):
    layers = module.layers
    inp = module.Input((6, 6, 4))
    x = layers.Conv2D(8, 3, padding="same", name="conv")(inp)
    x = layers.Activation("swish", name="act")(x)
    se = layers.GlobalAveragePooling2D(keepdims=True, name="squeeze")(x)
    se = layers.Conv2D(2, 1, activation="relu", name="reduce")(se)
    se = layers.Conv2D(8, 1, activation="sigmoid", name="expand")(se)
    x = layers.Multiply(name="excite")([x, se])
    x = layers.Conv2D(5, 1, name="project")(x)
    model = module.Model(inp, layers.GlobalAveragePooling2D()(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., [0, 6]] = 0.0
    bias[[0, 6]] = 0.0  # channels 0 and 6 exactly zero: swish(0) = 0, times any gate = 0
    model.get_layer("conv").set_weights([kernel, bias])
    small = deephoyer_tf.shrink(model)
    x = rng.normal(size=(2, 6, 6, 4)).astype("float32")
    _check_exact(model, small, x)
    # A channel leaves both sides of the gate or neither.
    assert small.get_layer("expand").get_weights()[0].shape[-1] == small.get_layer("conv").get_weights()[0].shape[-1]


@pytest.mark.parametrize("module", FLAVOURS)
def test_hard_sigmoid_written_as_arithmetic(module):
    """MobileNetV3 writes ``relu6(x + 3) * (1 / 6)``: Keras 3 operations, tf_keras TFOpLambda."""
    layers = module.layers
    inp = module.Input((5, 5, 3))
    x = layers.Conv2D(6, 1, name="conv")(inp)
    x = layers.ReLU(6.0)(x + 3.0) * (1.0 / 6.0)
    model = module.Model(inp, layers.Conv2D(4, 1, name="head")(x))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 4] = 0.0
    model.get_layer("conv").set_weights([kernel, bias])
    small = deephoyer_tf.shrink(model)
    _check_exact(model, small, rng.normal(size=(2, 5, 5, 3)).astype("float32"))
    assert small.get_layer("conv").get_weights()[0].shape[-1] == 5
    assert small.shrink_summary.folded == 1


def test_arithmetic_with_a_per_channel_constant_is_kept_whole():
    inp = keras.Input((5, 5, 3))
    x = keras.layers.Conv2D(4, 1, name="conv")(inp)
    x = x * np.arange(1, 5, dtype="float32")  # slicing channels would need the constant cut too
    model = keras.Model(inp, keras.layers.Conv2D(2, 1, name="head")(x))
    kernel, bias = model.get_layer("conv").get_weights()
    kernel[..., 1] = 0.0
    model.get_layer("conv").set_weights([kernel, bias])
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("conv").get_weights()[0].shape[-1] == 4  # kept, exact
    (name, why), = small.shrink_summary.kept_whole.items()
    assert why == "Multiply cannot be cut here (it mixes units, or broadcasts a per-unit constant)"
    assert f"{name}: every unit kept: {why}" in str(small.shrink_summary)
    x = np.random.default_rng(0).normal(size=(2, 5, 5, 3)).astype("float32")
    _check_exact(model, small, x)


@pytest.mark.parametrize("module", FLAVOURS)
def test_separable_convolution_loses_dead_inputs_and_filters(module):
    layers = module.layers
    inp = module.Input((7, 7, 3))
    x = layers.Conv2D(6, 1, activation="relu", name="conv")(inp)
    x = layers.SeparableConv2D(5, 3, padding="same", depth_multiplier=2, name="sep")(x)
    model = module.Model(inp, layers.Dense(2, name="head")(layers.Flatten()(x)))
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    conv, conv_bias = model.get_layer("conv").get_weights()
    conv[..., 2] = 0.0
    conv_bias[2] = -1.0  # relu(-1) = 0: channel 2 is exactly zero
    model.get_layer("conv").set_weights([conv, conv_bias])
    depthwise, pointwise, bias = model.get_layer("sep").get_weights()
    pointwise[..., 4] = 0.0  # filter 4 of the separable layer dead
    model.get_layer("sep").set_weights([depthwise, pointwise, bias])
    small = deephoyer_tf.shrink(model)
    _check_exact(model, small, rng.normal(size=(2, 7, 7, 3)).astype("float32"))
    depthwise, pointwise, _ = small.get_layer("sep").get_weights()
    assert depthwise.shape == (3, 3, 5, 2) and pointwise.shape == (1, 1, 10, 4)
