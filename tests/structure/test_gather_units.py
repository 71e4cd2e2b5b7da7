"""Tests for deephoyer_tf.structure.gather_units: the GatherUnits layer of both flavours."""

import json

import keras
import numpy as np
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf.structure.gather_units import GatherUnits
from deephoyer_tf.structure.gather_units import gather_units_class

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


@pytest.mark.parametrize("module", MODULES)
def test_gather_units_layer(module):
    cls = gather_units_class(module)
    layer = cls([2, 0], name="g")
    np.testing.assert_array_equal(np.asarray(layer(np.array([[1.0, 2.0, 3.0]]))), [[3.0, 1.0]])
    config = layer.get_config()
    assert json.loads(json.dumps(config))["indices"] == [2, 0]
    import inspect

    arguments = set(inspect.signature(cls.__init__).parameters) - {"self", "kwargs"}
    assert arguments <= set(config)
    assert cls.from_config(config).indices == [2, 0]
    with pytest.raises(ValueError, match=r"argument `indices`.*Received: indices=\[\]"):
        cls([])
    with pytest.raises(ValueError, match=r"Received: indices=\[1, -1\]"):
        cls([1, -1])


def test_the_classes_of_each_flavour():
    assert gather_units_class(keras) is GatherUnits is deephoyer_tf.GatherUnits
    cls = gather_units_class(tf_keras)
    assert issubclass(cls, tf_keras.layers.Layer) and not issubclass(cls, keras.layers.Layer)
    assert cls.__name__ == "GatherUnits"
    assert keras.saving.get_registered_name(GatherUnits) == "deephoyer_tf>GatherUnits"
    assert tf_keras.utils.get_registered_name(cls) == "deephoyer_tf>GatherUnits"


@pytest.mark.parametrize("module", MODULES)
def test_gathers_the_last_axis_in_order_as_numpy(module):
    x = np.random.default_rng(0).standard_normal((2, 3, 5)).astype("float32")
    indices = np.array([4, 0, 0, 2])  # a NumPy array; repeats allowed
    layer = gather_units_class(module)(indices)
    assert layer.indices == [4, 0, 0, 2] and all(type(i) is int for i in layer.indices)
    np.testing.assert_array_equal(np.asarray(layer(x)), x[..., [4, 0, 0, 2]])
    assert tuple(layer.compute_output_shape((None, 3, 5))) == (None, 3, 4)


@pytest.mark.parametrize("module", MODULES)
@pytest.mark.parametrize("bad", [(), [True], [1.0], "01", 3, [np.int64(2), -3]])
def test_bad_indices_exact_message(module, bad):
    with pytest.raises(ValueError) as error:
        gather_units_class(module)(bad)
    assert str(error.value) == (
        "Invalid value for argument `indices`. Expected a non-empty list of integers >= 0. "
        f"Received: indices={bad!r}"
    )


@pytest.mark.parametrize("module", MODULES)
def test_model_with_gather_units_saves_and_loads(module, tmp_path):
    layers = module.layers
    model = module.Sequential(
        [module.Input((4,)), gather_units_class(module)([3, 1], name="gather"), layers.Dense(2, name="fc")]
    )
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = module.models.load_model(path)
    assert type(loaded.get_layer("gather")) is gather_units_class(module)
    x = np.random.default_rng(1).standard_normal((3, 4)).astype("float32")
    np.testing.assert_allclose(np.asarray(loaded(x)), np.asarray(model(x)), rtol=1e-6)
