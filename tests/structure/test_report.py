"""Tests of deephoyer_tf.sparsity_report: the paper's structures, exactly."""

import json
import os

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from tests.helpers import nets as _nets

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _kernel(layer):
    return layer.get_weights()[0]


@pytest.mark.parametrize("module", MODULES)
def test_lenet_300_100_paper_structure(module):
    model, pixels, h1, h2 = _nets.lenet_300_100(module)
    report = deephoyer_tf.sparsity_report(model)
    assert report.structure == "353-45-11"
    assert report.macs == 16_490 == 353 * 45 + 45 * 11 + 11 * 10
    assert report.dense_macs == 266_200 == 784 * 300 + 300 * 100 + 100 * 10
    kernels = [_kernel(model.get_layer(n)) for n in ("fc1", "fc2", "fc3")]
    assert [r.name for r in report.layers] == ["fc1", "fc2", "fc3"]
    assert [r.nonzero_weights for r in report.layers] == [np.count_nonzero(k) for k in kernels]
    assert report.total_weights == sum(k.size for k in kernels)
    assert report.density == pytest.approx(report.nonzero_weights / report.total_weights)
    assert report.compression == pytest.approx(report.total_weights / report.nonzero_weights)
    fc1 = report.layers[0]
    # One dead pixel has a nonzero weight, but only to a dead hidden unit.
    assert np.count_nonzero(np.any(kernels[0] != 0, axis=1)) == 354
    assert (fc1.live_inputs, fc1.live_outputs, fc1.inputs, fc1.outputs) == (353, 45, 784, 300)
    assert fc1.kernel_shape == (784, 300)
    assert (fc1.bias_weights, fc1.nonzero_biases) == (300, 300)
    assert [r.live_outputs for r in report.layers] == [45, 11, 10]


@pytest.mark.parametrize("module", MODULES)
def test_lenet5_paper_structure(module):
    model, f1, f2, feats, hidden = _nets.lenet5(module)
    report = deephoyer_tf.sparsity_report(model)
    assert report.structure == "5-12-139-13"
    conv = 24 * 24 * 25 * 1 * 5 + 8 * 8 * 25 * 5 * 12
    assert report.macs == 169_937 == conv + 139 * 13 + 13 * 10
    assert report.dense_macs == 2_293_000
    by_name = {r.name: r for r in report.layers}
    assert (by_name["conv2"].live_inputs, by_name["conv2"].live_outputs) == (5, 12)
    assert by_name["conv2"].macs == 8 * 8 * 5 * 5 * 5 * 12
    assert by_name["conv2"].dense_macs == 8 * 8 * 5 * 5 * 20 * 50
    # 4 x 4 x 12 = 192 flattened features feed fc1; 139 have nonzero fc1 rows.
    assert (by_name["fc1"].live_inputs, by_name["fc1"].inputs) == (139, 800)
    assert by_name["conv2"].kernel_shape == (5, 5, 20, 50)


def test_report_to_dict_and_table():
    model, *_ = _nets.lenet_300_100(keras)
    report = deephoyer_tf.sparsity_report(model)
    data = json.loads(json.dumps(report.to_dict()))
    assert data["structure"] == "353-45-11"
    assert data["macs"] == 16_490 and data["dense_macs"] == 266_200
    assert data["nonzero_weights"] == report.nonzero_weights
    assert data["layers"][0]["kernel_shape"] == [784, 300]
    assert data["layers"][0]["live_inputs"] == 353
    assert data["model_name"] == "lenet_300_100"
    text = str(report)
    assert "Structure: 353-45-11" in text
    assert "16,490 / 266,200" in text
    assert f"{report.nonzero_weights:,} / {report.total_weights:,}" in text
    assert f"Compression: {report.compression:.1f}x" in text
    assert len([line for line in text.splitlines() if line.startswith("fc")]) == 3


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("dead_in", ["both", "stem", "branch"])
def test_residual_add_couples_channels(module, dead_in):
    model = _nets.residual_net(module, dead_channel=2, dead_in=dead_in)
    rows = {r.name: r for r in deephoyer_tf.sparsity_report(model).layers}
    # The Add channel is dead only when dead in both producers.
    assert rows["head"].live_inputs == (5 if dead_in == "both" else 6)
    assert rows["stem"].live_outputs == (6 if dead_in == "branch" else 5)
    assert rows["branch_b"].live_outputs == (6 if dead_in == "stem" else 5)


@pytest.mark.parametrize("module", MODULES)
def test_concatenate_offsets_channels(module):
    layers = module.layers
    inp = module.Input((6, 6, 2))
    a = layers.Conv2D(3, 1, name="a")(inp)
    b = layers.Conv2D(4, 1, name="b")(inp)
    c = layers.Concatenate(name="cat")([a, b])
    d = layers.Conv2D(2, 1, name="d")(c)
    out = layers.Dense(1, name="out")(layers.Flatten()(d))
    model = module.Model(inp, out)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if layer.weights:
            layer.set_weights([rng.normal(size=w.shape).astype("float32") + 0.5
                               for w in layer.get_weights()])
    ka = _kernel(model.get_layer("a"))
    ka[..., 1] = 0  # filter 1 of a: concatenated channel 1
    model.get_layer("a").set_weights([ka, np.ones(3, "float32")])
    kb = _kernel(model.get_layer("b"))
    kb[..., 2] = 0  # filter 2 of b: concatenated channel 3 + 2 = 5
    model.get_layer("b").set_weights([kb, np.ones(4, "float32")])
    kd = _kernel(model.get_layer("d"))
    kd[:, :, 0, :] = 0  # channel 0 (filter 0 of a) unused by d
    model.get_layer("d").set_weights([kd, np.ones(2, "float32")])
    rows = {r.name: r for r in deephoyer_tf.sparsity_report(model).layers}
    assert rows["a"].live_outputs == 1  # filter 2 only
    assert rows["b"].live_outputs == 3
    assert rows["d"].live_inputs == 4  # channels 2, 3, 4, 6
    assert rows["d"].macs == 36 * 1 * 4 * 2


@pytest.mark.parametrize("module", MODULES)
def test_nested_model_is_inlined(module):
    inner, *_ = _nets.lenet_300_100(module)
    inp = module.Input((28, 28, 1))
    outer = module.Model(inp, module.layers.Activation("softmax", name="probs")(inner(inp)))
    report = deephoyer_tf.sparsity_report(outer)
    assert report.structure == "353-45-11"
    assert report.macs == 16_490
    assert [r.name for r in report.layers] == [
        "lenet_300_100/fc1", "lenet_300_100/fc2", "lenet_300_100/fc3"
    ]


@pytest.mark.parametrize("module", MODULES)
def test_batchnorm_zero_gamma_kills_channel(module):
    layers = module.layers
    model = module.Sequential([
        module.Input((5,)),
        layers.Dense(4, name="d1"),
        layers.BatchNormalization(name="bn"),
        layers.Dense(2, name="d2"),
    ])
    bn = model.get_layer("bn")
    gamma, beta, mean, var = bn.get_weights()
    gamma[1] = 0.0
    bn.set_weights([gamma, beta, mean, var])
    report = deephoyer_tf.sparsity_report(model)
    assert report.structure == "5-3"
    assert report.macs == 5 * 3 + 3 * 2


def test_prune_low_magnitude_wrapper_is_read_through(monkeypatch):
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", os.environ.get("TF_USE_LEGACY_KERAS", "0"))
    import tensorflow_model_optimization as tfmot

    model, *_ = _nets.lenet_300_100(tf_keras)
    plain = deephoyer_tf.sparsity_report(model)
    wrapped = tfmot.sparsity.keras.prune_low_magnitude(model)
    report = deephoyer_tf.sparsity_report(wrapped)
    assert report.structure == "353-45-11"
    assert report.macs == plain.macs
    assert report.nonzero_weights == plain.nonzero_weights
    assert [r.type for r in report.layers] == ["Dense"] * 3
    # The mask counts: masking a nonzero weight removes it from the count.
    fc3 = [layer for layer in wrapped.layers if layer.layer.name == "fc3"][0]
    weight, mask, _ = fc3.pruning_vars[0]
    row, col = np.argwhere(weight.numpy() != 0)[0]
    values = mask.numpy()
    values[row, col] = 0.0
    mask.assign(values)
    assert deephoyer_tf.sparsity_report(wrapped).nonzero_weights == plain.nonzero_weights - 1


def test_subclassed_model_judges_layers_alone():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1 = keras.layers.Dense(4)
            self.d2 = keras.layers.Dense(3)

        def call(self, x):
            return self.d2(self.d1(x))

    net = Net()
    net(np.zeros((1, 6), "float32"))
    k1, b1 = net.d1.get_weights()
    k1[:, 0] = 0
    k1[5] = 0
    net.d1.set_weights([k1, b1])
    report = deephoyer_tf.sparsity_report(net)
    assert [(r.live_inputs, r.live_outputs) for r in report.layers] == [(5, 3), (4, 3)]
    assert report.macs == 5 * 3 + 4 * 3


def test_bad_arguments():
    with pytest.raises(TypeError, match="Invalid type for argument `model`.*Received: model=3"):
        deephoyer_tf.sparsity_report(3)
    with pytest.raises(ValueError, match="needs a built model"):
        deephoyer_tf.sparsity_report(keras.Sequential([keras.layers.Dense(2)]))
