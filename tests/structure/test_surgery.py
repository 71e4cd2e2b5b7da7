"""Tests of deephoyer_tf.shrink: dead units removed, outputs unchanged."""

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.structure.gather_units import gather_units_class
from tests.helpers import nets as _nets

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _max_diff(a, b, x):
    return float(np.max(np.abs(np.asarray(a(x, training=False)) - np.asarray(b(x, training=False)))))


def _random(shape, seed=1):
    return np.random.default_rng(seed).random(shape).astype("float32")


def _kernel_shape(model, name):
    return tuple(model.get_layer(name).get_weights()[0].shape)


def _gather(model):
    found = [layer for layer in model.layers if type(layer).__name__ == "GatherUnits"]
    assert len(found) == 1
    return found[0]


@pytest.mark.parametrize("module", MODULES)
def test_lenet_300_100_shrinks_to_353_45_11(module):
    model, pixels, h1, h2 = _nets.lenet_300_100(module)
    before = [w.copy() for w in model.get_weights()]
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    x = _random((16, 28, 28, 1))
    assert _max_diff(model, small, x) <= 1e-5
    assert [_kernel_shape(small, n) for n in ("fc1", "fc2", "fc3")] == [
        (353, 45), (45, 11), (11, 10)
    ]
    assert _gather(small).indices == pixels.tolist()  # input signature kept
    report = deephoyer_tf.sparsity_report(small)
    assert report.structure == "353-45-11"
    assert report.dense_macs == report.macs == deephoyer_tf.sparsity_report(model).macs == 16_490
    assert summary.removed["fc1"] == (784 - 353, 300 - 45)
    assert summary.kept_for_exactness == 0
    assert small.shrink_summary is summary
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))


@pytest.mark.parametrize("module", MODULES)
def test_lenet5_shrinks_to_5_12_139_13(module):
    model, f1, f2, feats, hidden = _nets.lenet5(module)
    small = deephoyer_tf.shrink(model)
    x = _random((16, 28, 28, 1))
    assert _max_diff(model, small, x) <= 1e-5
    assert _kernel_shape(small, "conv1") == (5, 5, 1, 5)
    assert _kernel_shape(small, "conv2") == (5, 5, 5, 12)
    assert _kernel_shape(small, "fc1") == (139, 13)
    # Flatten index mapping: feature p * 50 + c becomes p * 12 + rank of c.
    expected = (feats // 50) * 12 + np.searchsorted(f2, feats % 50)
    assert _gather(small).indices == expected.tolist()
    report = deephoyer_tf.sparsity_report(small)
    assert report.structure == "5-12-139-13"
    assert report.dense_macs == report.macs == 169_937


@pytest.mark.parametrize("module", MODULES)
def test_constants_of_removed_units_are_folded_into_next_bias(module):
    layers = module.layers
    model = module.Sequential([
        module.Input((3,)),
        layers.Dense(4, activation="relu", name="h"),
        layers.Dense(2, name="o"),
    ])
    rng = np.random.default_rng(0)
    wh = rng.normal(size=(3, 4)).astype("float32")
    wh[:, 1:3] = 0.0  # units 1 and 2 are dead: they emit relu(bias)
    bh = np.array([0.1, 0.7, -0.4, 0.2], "float32")
    wo = rng.normal(size=(4, 2)).astype("float32")
    bo = np.array([0.5, -0.5], "float32")
    model.get_layer("h").set_weights([wh, bh])
    model.get_layer("o").set_weights([wo, bo])
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    kernel, bias = small.get_layer("o").get_weights()
    np.testing.assert_array_equal(kernel, wo[[0, 3]])
    np.testing.assert_allclose(bias, bo + 0.7 * wo[1], rtol=1e-6)  # relu(-0.4) = 0
    assert summary.folded == 1
    assert _max_diff(model, small, _random((8, 3))) <= 1e-6


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize(
    "padding, bias, kept",
    [("same", 0.5, True), ("same", -0.5, False), ("valid", 0.5, False)],
)
def test_constant_entering_padded_conv_is_kept_unless_zero(module, padding, bias, kept):
    layers = module.layers
    model = module.Sequential([
        module.Input((6, 6, 2)),
        layers.Conv2D(3, 1, activation="relu", name="c1"),
        layers.Conv2D(2, 3, padding=padding, name="c2"),
        layers.Flatten(),
        layers.Dense(2, name="out"),
    ])
    c1 = model.get_layer("c1")
    kernel, b = c1.get_weights()
    kernel = np.random.default_rng(0).normal(size=kernel.shape).astype("float32")
    kernel[..., 1] = 0.0
    b[1] = bias
    c1.set_weights([kernel, b])
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    assert _max_diff(model, small, _random((4, 6, 6, 2))) <= 1e-5
    assert _kernel_shape(small, "c2")[2] == (3 if kept else 2)
    assert summary.kept_for_exactness == int(kept)
    assert summary.kept_for_exactness_units == ([("c2", 1)] if kept else [])
    assert summary.kept_dead_outputs["c1"] == int(kept)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("dead_in", ["both", "stem", "branch"])
def test_residual_channel_removed_only_when_dead_in_both_branches(module, dead_in):
    model = _nets.residual_net(module, dead_channel=2, dead_in=dead_in)
    small = deephoyer_tf.shrink(model)
    assert _max_diff(model, small, _random((4, 8, 8, 3))) <= 1e-5
    channels = 5 if dead_in == "both" else 6
    assert _kernel_shape(small, "stem")[-1] == channels
    assert _kernel_shape(small, "branch_b")[-1] == channels
    assert _kernel_shape(small, "head")[2] == channels
    assert small.get_layer("bn").get_weights()[0].shape == (channels,)
    before, after = deephoyer_tf.sparsity_report(model), deephoyer_tf.sparsity_report(small)
    assert after.macs == before.macs and after.structure == before.structure


@pytest.mark.parametrize("module", MODULES)
def test_concatenate_and_nested_model(module):
    layers = module.layers
    inp = module.Input((6, 6, 2))
    a = layers.Conv2D(3, 1, activation="relu", name="a")(inp)
    b = layers.Conv2D(4, 1, activation="relu", name="b")(inp)
    c = layers.Concatenate(name="cat")([a, b])
    inner = module.Sequential(
        [module.Input((6, 6, 7)), layers.Conv2D(2, 1, name="d"), layers.Flatten()], name="inner"
    )
    model = module.Model(inp, layers.Dense(2, name="out")(inner(c)))
    rng = np.random.default_rng(0)
    for layer in (model.get_layer("a"), model.get_layer("b"), inner.get_layer("d")):
        kernel, bias = layer.get_weights()
        layer.set_weights([rng.normal(size=kernel.shape).astype("float32"), bias + 0.3])
    for name, dead in (("a", 1), ("b", 2)):
        kernel, bias = model.get_layer(name).get_weights()
        kernel[..., dead] = 0.0
        model.get_layer(name).set_weights([kernel, bias])
    small = deephoyer_tf.shrink(model)
    assert _max_diff(model, small, _random((4, 6, 6, 2))) <= 1e-5
    assert _kernel_shape(small, "a")[-1] == 2
    assert _kernel_shape(small, "b")[-1] == 3
    assert _kernel_shape(small, "d") == (1, 1, 5, 2)


@pytest.mark.parametrize("module", MODULES)
def test_shrunk_model_saves_and_loads(module, tmp_path):
    model, *_ = _nets.lenet5(module)
    small = deephoyer_tf.shrink(model)
    path = str(tmp_path / "small.keras")
    small.save(path)
    loaded = module.models.load_model(path)
    x = _random((4, 28, 28, 1))
    assert _max_diff(model, loaded, x) <= 1e-5
    expected = gather_units_class(module)
    assert isinstance(_gather(loaded), expected)


@pytest.mark.slow
@pytest.mark.parametrize("module", MODULES)
def test_resnet50_with_dead_filters_keeps_outputs(module):
    model = _nets.resnet50_with_dead_filters(module)
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    x = _random((2, 64, 64, 3))
    assert _max_diff(model, small, x) <= 1e-4
    # Stage-2 residual channels 7 and 9 are dead in every producer: removed
    # from all producers and consumers; channel 5 is live in one: kept.
    for name in ("conv2_block1_0_conv", "conv2_block1_3_conv", "conv2_block3_3_conv"):
        assert _kernel_shape(small, name)[-1] == 254
    for name in ("conv2_block2_1_conv", "conv3_block1_1_conv", "conv3_block1_0_conv"):
        assert _kernel_shape(small, name)[2] == 254
    assert summary.kept_dead_outputs["conv2_block2_3_conv"] == 1  # channel 5
    # Dead filters inside the bottleneck: constants entering the padded 3x3
    # conv are kept unless zero; those entering the 1x1 conv are folded.
    assert _kernel_shape(small, "conv2_block1_1_conv")[-1] == 64 - 8 + summary.kept_dead_outputs[
        "conv2_block1_1_conv"]
    assert summary.kept_for_exactness == sum(summary.kept_dead_outputs[f"{b}_1_conv"]
                                             for b in ("conv2_block1", "conv3_block2",
                                                       "conv4_block3"))
    assert 0 < summary.kept_for_exactness < 24
    assert _kernel_shape(small, "conv2_block1_2_conv")[-1] == 64 - 6
    before, after = deephoyer_tf.sparsity_report(model), deephoyer_tf.sparsity_report(small)
    assert after.macs == before.macs and after.structure == before.structure
    assert after.dense_macs < before.dense_macs


def test_a_layer_without_cutter_is_kept_whole_and_reported():
    inp = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(4, 1, name="c")(inp)
    x = keras.layers.Conv2DTranspose(3, 3, name="up")(x)
    model = keras.Model(inp, keras.layers.Dense(2, name="out")(keras.layers.Flatten()(x)))
    w, b = model.get_layer("c").get_weights()
    w[..., 1] = 0
    model.get_layer("c").set_weights([w, b])
    small = deephoyer_tf.shrink(model)
    summary = small.shrink_summary
    assert summary.kept_whole["up"] == "the registry entry of Conv2DTranspose has no cutter: copied whole"
    assert summary.removed["up"] == (0, 0)
    # its inputs keep every unit: the dead filter of "c" stays
    assert small.get_layer("c").kernel.shape == (1, 1, 2, 4)
    x = np.random.default_rng(0).normal(size=(3, 6, 6, 2)).astype("float32")
    np.testing.assert_allclose(small(x), model(x), rtol=1e-5, atol=1e-5)


def test_bad_models():
    with pytest.raises(TypeError, match="Invalid type for argument `model`"):
        deephoyer_tf.shrink("model.keras")

    class Net(keras.Model):
        def call(self, x):
            return x

    net = Net()
    net(np.zeros((1, 2), "float32"))
    with pytest.raises(ValueError, match="needs a built Sequential or functional model.*subclassed"):
        deephoyer_tf.shrink(net)
