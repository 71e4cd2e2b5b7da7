"""Tests for deephoyer_tf.models: the paper's LeNet-300-100 and LeNet-5."""

import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf.paper import models

FLAVOURS = ["keras", "tf_keras"]


def _kernels(model):
    return {layer.name: tuple(layer.kernel.shape) for layer in model.layers if hasattr(layer, "kernel")}


def _numpy_lenet_300_100(model, x):
    h = x.reshape(len(x), -1)
    for name, relu in (("fc1", True), ("fc2", True), ("fc3", False)):
        w, b = model.get_layer(name).get_weights()
        h = h @ w + b
        h = np.maximum(h, 0) if relu else h
    return h


def _numpy_conv_valid(x, w, b):
    k = w.shape[0]
    windows = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(1, 2))
    # windows: (n, h', w', c, k, k); w: (k, k, c, out)
    return np.einsum("nhwcij,ijco->nhwo", windows, w) + b


def _numpy_maxpool2(x):
    n, h, w, c = x.shape
    return x[:, : h // 2 * 2, : w // 2 * 2].reshape(n, h // 2, 2, w // 2, 2, c).max(axis=(2, 4))


def _numpy_lenet_5(model, x, relu_conv=True):
    act = (lambda v: np.maximum(v, 0)) if relu_conv else (lambda v: v)
    h = _numpy_maxpool2(act(_numpy_conv_valid(x, *model.get_layer("conv1").get_weights())))
    h = _numpy_maxpool2(act(_numpy_conv_valid(h, *model.get_layer("conv2").get_weights())))
    h = h.reshape(len(h), -1)  # channels-last flatten, as keras.layers.Flatten
    w, b = model.get_layer("fc1").get_weights()
    h = np.maximum(h @ w + b, 0)
    w, b = model.get_layer("fc2").get_weights()
    return h @ w + b


@pytest.fixture(scope="module")
def images():
    return np.random.default_rng(0).normal(size=(3, 28, 28, 1)).astype(np.float32)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lenet_300_100_architecture(flavour, images):
    model = models.lenet_300_100(flavour=flavour)
    assert [layer.name for layer in model.layers] == ["flatten", "fc1", "fc2", "fc3"]
    assert _kernels(model) == {"fc1": (784, 300), "fc2": (300, 100), "fc3": (100, 10)}
    assert sum(np.prod(s) for s in _kernels(model).values()) == 266_200
    assert model.count_params() == 266_200 + 300 + 100 + 10
    assert tuple(model.input_shape) == (None, 28, 28, 1)
    out = np.asarray(model(images))
    np.testing.assert_allclose(out, _numpy_lenet_300_100(model, images), rtol=1e-4, atol=1e-4)
    # Logits, not probabilities.
    assert not np.allclose(out.sum(axis=1), 1.0)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lenet_5_architecture(flavour, images):
    model = models.lenet_5(flavour=flavour)
    assert [layer.name for layer in model.layers] == [
        "conv1", "pool1", "conv2", "pool2", "flatten", "fc1", "fc2"
    ]
    assert _kernels(model) == {
        "conv1": (5, 5, 1, 20), "conv2": (5, 5, 20, 50), "fc1": (800, 500), "fc2": (500, 10)
    }
    assert sum(np.prod(s) for s in _kernels(model).values()) == 430_500
    assert model.count_params() == 430_500 + 20 + 50 + 500 + 10
    np.testing.assert_allclose(
        np.asarray(model(images)), _numpy_lenet_5(model, images), rtol=1e-4, atol=1e-4
    )


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_lenet_5_caffe_form_without_conv_activation(flavour, images):
    model = models.lenet_5(flavour=flavour, conv_activation=None)
    for name in ("conv1", "conv2"):
        layer = model.get_layer(name)
        # Biases of zero hide the difference; make them negative so ReLU would act.
        w, b = layer.get_weights()
        layer.set_weights([w, b - 0.5])
    expected = _numpy_lenet_5(model, images, relu_conv=False)
    np.testing.assert_allclose(np.asarray(model(images)), expected, rtol=1e-4, atol=1e-4)
    assert not np.allclose(expected, _numpy_lenet_5(model, images, relu_conv=True), atol=1e-3)


@pytest.mark.parametrize("builder", [models.lenet_300_100, models.lenet_5])
def test_flavours_build_the_same_function(builder, images):
    k3 = builder(flavour="keras")
    k2 = builder(flavour="tf_keras")
    assert type(k2).__module__.startswith("tf_keras")
    assert [layer.name for layer in k2.layers] == [layer.name for layer in k3.layers]
    k2.set_weights(k3.get_weights())
    np.testing.assert_allclose(np.asarray(k2(images)), np.asarray(k3(images)), atol=1e-5)


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_kernel_regularizer_shared_and_mapping(flavour):
    hs = deephoyer_tf.HoyerSquare(1e-3)
    model = models.lenet_300_100(kernel_regularizer=hs, flavour=flavour)
    assert [model.get_layer(n).kernel_regularizer for n in ("fc1", "fc2", "fc3")] == [hs] * 3
    assert len(model.losses) == 3
    expected = sum(
        float(hs(model.get_layer(n).kernel)) for n in ("fc1", "fc2", "fc3")
    )
    assert float(sum(model.losses)) == pytest.approx(expected, rel=1e-5)

    group = deephoyer_tf.GroupHoyerSquare(1e-3)
    model = models.lenet_5(kernel_regularizer={"conv1": group, "fc1": hs}, flavour=flavour)
    regs = {layer.name: layer.kernel_regularizer for layer in model.layers if hasattr(layer, "kernel")}
    assert regs == {"conv1": group, "conv2": None, "fc1": hs, "fc2": None}
    assert len(model.losses) == 2


def test_saves_and_loads_with_regularizer(tmp_path, images):
    model = models.lenet_5(kernel_regularizer=deephoyer_tf.HoyerSquare(2e-4))
    path = tmp_path / "lenet5.keras"
    model.save(path)
    import keras

    loaded = keras.models.load_model(path)
    assert [layer.name for layer in loaded.layers] == [layer.name for layer in model.layers]
    assert loaded.get_layer("fc1").kernel_regularizer.strength == pytest.approx(2e-4)
    np.testing.assert_allclose(np.asarray(loaded(images)), np.asarray(model(images)), atol=1e-6)


def test_bad_arguments():
    with pytest.raises(ValueError, match=r"argument `flavour`.*Received: flavour='keras2'"):
        models.lenet_300_100(flavour="keras2")
    with pytest.raises(ValueError, match=r"argument `conv_activation`.*Received: conv_activation='tanh'"):
        models.lenet_5(conv_activation="tanh")
    with pytest.raises(ValueError, match=r"keys are among \['fc1', 'fc2', 'fc3'\]\. Received keys: \['conv1'\]"):
        models.lenet_300_100(kernel_regularizer={"conv1": deephoyer_tf.Hoyer()})
    with pytest.raises(TypeError, match=r"Received: 0\.001 of type float"):
        models.lenet_300_100(kernel_regularizer=0.001)
    with pytest.raises(TypeError, match=r"Received: 'l1' of type str \(for layer 'fc2'\)"):
        models.lenet_5(kernel_regularizer={"fc2": "l1"})
