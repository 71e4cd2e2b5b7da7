"""Tests for deephoyer_tf._internal.flavours: Keras 3 vs tf_keras objects, and a model's layers."""

import keras
import numpy as np
import pytest
import tf_keras

from deephoyer_tf._internal import flavours

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _subclassed(module):
    class Net(module.Model):
        def __init__(self):
            super().__init__()
            self.fc = module.layers.Dense(2)

        def call(self, x):
            return self.fc(x)

    net = Net()
    net(np.zeros((1, 3), "float32"))
    return net


@pytest.mark.parametrize("module", MODULES)
def test_is_tf_keras_and_keras_module(module):
    layer = module.layers.Dense(2)
    model = module.Sequential([module.Input((3,)), layer])
    expected = module is tf_keras
    for obj in (layer, model, module.layers.Dense, module.Model, _subclassed(module)):
        assert flavours.is_tf_keras(obj) is expected
        assert flavours.keras_module(obj) is module
    assert flavours.is_tf_keras(np.zeros(2)) is False and flavours.keras_module(3) is keras


@pytest.mark.parametrize("module", MODULES)
def test_is_model_and_check_model(module):
    model = module.Sequential([module.Input((3,)), module.layers.Dense(2)])
    assert flavours.is_model(model) and flavours.is_model(_subclassed(module))
    assert not flavours.is_model(module.layers.Dense(2)) and not flavours.is_model(module.Model)
    flavours.check_model(model)
    layer = module.layers.Dense(2, name="fc")
    with pytest.raises(TypeError) as error:
        flavours.check_model(layer, "net")
    assert str(error.value) == (
        "Invalid type for argument `net`. Expected a Keras model (keras.Model or tf_keras.Model). "
        f"Received: net={layer!r} of type Dense"
    )


def test_check_model_exact_message_for_a_string():
    with pytest.raises(TypeError) as error:
        flavours.check_model("m")
    assert str(error.value) == (
        "Invalid type for argument `model`. Expected a Keras model (keras.Model or tf_keras.Model). "
        "Received: model='m' of type str"
    )


@pytest.mark.parametrize("module", MODULES)
def test_is_graph_model(module):
    x = module.Input((3,))
    functional = module.Model(x, module.layers.Dense(2)(x))
    assert flavours.is_graph_model(functional)
    assert flavours.is_graph_model(module.Sequential([module.layers.Dense(2)]))
    assert not flavours.is_graph_model(_subclassed(module))


@pytest.mark.parametrize("module", MODULES)
def test_flat_layers_expands_nested_models_without_repeats(module):
    layers = module.layers
    shared = layers.Dense(3, name="shared")
    inner = module.Sequential([module.Input((3,)), layers.Dense(3, name="a"), shared], name="inner")
    x = module.Input((3,), name="x")
    y = shared(inner(x))  # `shared` called twice, once inside `inner`
    z = layers.Dense(2, name="out")(inner(y))  # `inner` called twice
    model = module.Model(x, z)
    assert [layer.name for layer in model.layers] == ["x", "inner", "shared", "out"]
    assert [layer.name for layer in flavours.flat_layers(model)] == ["x", "a", "shared", "out"]
    # A list of layers works too, nested models expanded.
    listed = flavours.flat_layers([inner, shared, layers.Flatten(name="flat")])
    assert [layer.name for layer in listed] == ["a", "shared", "flat"]
