"""ChannelGroups: one group per depthwise channel, across the depthwise filter and its readers."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.regularizers.channel_groups import ChannelGroups

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _group_hs(rows):
    norms = np.sqrt((rows.astype(np.float64) ** 2).sum(axis=1))
    return norms.sum() ** 2 / (norms ** 2).sum()


def _reference(depthwise, readers):
    """NumPy: row c = depthwise filter c, then each reader's input rows c*m..c*m+m-1."""
    channels, multiplier = depthwise.shape[-2:]
    rows = [np.moveaxis(depthwise, -2, 0).reshape(channels, -1)]
    for kernel in readers:
        rows.append(np.moveaxis(kernel, -2, 0).reshape(channels, -1))
    return np.concatenate(rows, axis=1)


def test_value_and_gradients_reach_the_readers():
    rng = np.random.default_rng(0)
    depthwise = rng.normal(size=(3, 3, 4, 2)).astype("float32")
    reader = tf.Variable(rng.normal(size=(1, 1, 8, 5)).astype("float32"))
    reg = ChannelGroups(0.5, readers=["project"])
    reg.link([(reader, -2)])
    x = tf.Variable(depthwise)
    with tf.GradientTape() as tape:
        value = reg(x)
    want = 0.5 * _group_hs(_reference(depthwise, [reader.numpy()]))
    assert float(value) == pytest.approx(want, rel=1e-5)
    grad_x, grad_reader = tape.gradient(value, [x, reader])
    assert np.all(np.isfinite(grad_x.numpy())) and np.abs(grad_reader.numpy()).sum() > 0


def test_the_docstring_example():
    reg = ChannelGroups(2.0, readers=["p"])
    # reader input rows: channel 0 -> [3, 4], channel 1 -> [0, 0]
    reader = np.zeros((1, 1, 2, 2), "float32")
    reader[0, 0, 0] = [3.0, 4.0]
    reg.link([(reader, -2)])
    assert float(reg(np.zeros((1, 1, 2, 1), "float32"))) == pytest.approx(2.0)


def test_errors_and_unlinked_warning():
    with pytest.raises(ValueError, match=r"Invalid value for argument `kind`\. Expected one of \['group_hs', 'group_lasso'\]\. Received: kind='l1'"):
        ChannelGroups(1e-3, kind="l1")
    with pytest.raises(ValueError, match=r"ChannelGroups needs a depthwise kernel .* shape \(3, 4\)"):
        ChannelGroups(1e-3)(np.ones((3, 4), "float32"))
    reg = ChannelGroups.from_config({"strength": 1e-3, "kind": "group_hs", "readers": ["project"]})
    depthwise = np.random.default_rng(0).normal(size=(3, 3, 4, 1)).astype("float32")
    with pytest.warns(RuntimeWarning, match=r"not linked to its readers \['project'\]"):
        value = float(reg(depthwise))
    assert value == pytest.approx(1e-3 * _group_hs(_reference(depthwise, [])), rel=1e-5)


def _depthwise(layer):
    """The depthwise kernel (Keras 3 DepthwiseConv: `kernel`; tf_keras and SeparableConv: `depthwise_kernel`)."""
    value = getattr(layer, "depthwise_kernel", None)
    return value if value is not None else layer.kernel


def _mobile_block(module):
    """expand 1x1 -> BN -> ReLU6 -> depthwise -> BN -> ReLU6 -> [SE] -> project 1x1 -> head."""
    layers = module.layers
    inp = module.Input((8, 8, 3))
    x = layers.Conv2D(6, 1, name="expand")(inp)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="bn1")(x))
    x = layers.DepthwiseConv2D(3, padding="same", name="dw")(x)
    x = layers.ReLU(6.0)(layers.BatchNormalization(name="bn2")(x))
    se = layers.GlobalAveragePooling2D(keepdims=True)(x)
    se = layers.Conv2D(2, 1, activation="relu", name="squeeze")(se)
    se = layers.Conv2D(6, 1, activation="sigmoid", name="excite")(se)
    x = layers.Multiply()([x, se])
    x = layers.Conv2D(4, 1, name="project")(x)
    x = layers.SeparableConv2D(5, 3, depth_multiplier=2, name="sep")(x)
    out = layers.Dense(3, name="head")(layers.GlobalAveragePooling2D()(x))
    return module.Model(inp, out)


@pytest.mark.parametrize("module", FLAVOURS)
def test_regularize_couples_each_depthwise_channel_with_its_readers(module):
    model = _mobile_block(module)
    reg = deephoyer_tf.GroupHoyerSquare(1e-2)
    regularized = deephoyer_tf.regularize(model, reg)
    dw = regularized.get_layer("dw")
    coupled = dw.depthwise_regularizer
    assert isinstance(coupled, ChannelGroups) and coupled.linked
    assert sorted(coupled.readers) == ["project", "squeeze"]  # the SE squeeze and the projection
    sep = regularized.get_layer("sep")
    assert isinstance(sep.depthwise_regularizer, ChannelGroups) and sep.depthwise_regularizer.readers == ["sep"]
    # one strength for all: the schedule and ThresholdPruning switch it off everywhere
    assert deephoyer_tf.strength_variables(regularized) == reg.strength_variables()
    # model.losses: per-layer Group-HS on the standard convolutions, ChannelGroups on depthwise kernels
    kernels = {layer.name: layer for layer in regularized.layers}
    expected = 0.0
    for name in ("expand", "squeeze", "excite", "project", "head"):
        expected += float(kernels[name].kernel_regularizer(kernels[name].kernel))
    expected += 1e-2 * _group_hs(_reference(_depthwise(dw).numpy(), [
        kernels["squeeze"].kernel.numpy(), kernels["project"].kernel.numpy()]))
    expected += 1e-2 * _group_hs(_reference(sep.depthwise_kernel.numpy(), [sep.pointwise_kernel.numpy()]))
    expected += float(sep.pointwise_regularizer(sep.pointwise_kernel))
    assert sum(float(v) for v in regularized.losses) == pytest.approx(expected, rel=1e-5)
    reg.strength = 0.0
    assert sum(float(v) for v in regularized.losses) == 0.0


@pytest.mark.slow
def test_training_with_channel_groups_kills_whole_channels_and_shrink_removes_them():
    keras.utils.set_random_seed(0)
    model = deephoyer_tf.regularize(_mobile_block(keras), deephoyer_tf.GroupHoyerSquare(3e-2))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 3)).astype("float32")
    y = rng.integers(0, 3, 64)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x, y, epochs=30, batch_size=16, verbose=0)
    deephoyer_tf.prune(model, std_ratio=0.5, layer_types=["Conv2D", "DepthwiseConv2D", "Dense"])
    dw = _depthwise(model.get_layer("dw")).numpy()
    dead = ~np.any(dw != 0, axis=(0, 1, 3))
    assert dead.any()
    small = deephoyer_tf.shrink(deephoyer_tf.strip_zero_masks(model))
    np.testing.assert_allclose(small(x), model(x), rtol=1e-4, atol=1e-4)
    assert _depthwise(small.get_layer("dw")).shape[-2] <= int((~dead).sum())


def test_loaded_models_keep_the_penalty_uncoupled_until_regularized_again(tmp_path):
    model = deephoyer_tf.regularize(_mobile_block(keras), deephoyer_tf.GroupHoyerSquare(1e-2))
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    reg = loaded.get_layer("dw").depthwise_regularizer
    assert isinstance(reg, ChannelGroups) and not reg.linked and reg.readers == model.get_layer("dw").depthwise_regularizer.readers
    again = deephoyer_tf.regularize(loaded, deephoyer_tf.GroupHoyerSquare(1e-2))
    assert again.get_layer("dw").depthwise_regularizer.linked
