"""Tests for deephoyer_tf.sparsity.kernels: the kernels the element-wise pipeline acts on."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import kernels as kernels_lib
from tests.helpers.fixed_zeros import make_pruned

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def _mixed(module):
    layers = module.layers
    return module.Sequential(
        [
            module.Input((6, 6, 2)),
            layers.Conv2D(3, 3, name="conv"),
            layers.SeparableConv2D(4, 3, name="sep"),
            layers.Flatten(name="flat"),
            layers.Dense(5, name="fc"),
        ]
    )


@pytest.mark.parametrize("module", FLAVOURS)
def test_model_kernels_in_layer_order_filtered_by_type(module):
    model = _mixed(module)
    refs = kernels_lib.model_kernels(model, ("Conv2D", "SeparableConv2D", "Dense"))
    assert [ref.layer.name for ref in refs] == ["conv", "sep", "sep", "fc"]
    sep = model.get_layer("sep")
    assert [ref.variable for ref in refs] == [
        model.get_layer("conv").kernel, sep.depthwise_kernel, sep.pointwise_kernel, model.get_layer("fc").kernel,
    ]
    assert all(ref.wrapper is None and ref.tfmot_mask() is None for ref in refs)
    assert refs[0].names() == {"conv"}
    assert [ref.layer.name for ref in kernels_lib.model_kernels(model, ("Dense",))] == ["fc"]
    assert kernels_lib.model_kernels(model, ()) == []


def test_nested_model_kernels_are_found():
    inner = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, name="inner_fc")], name="inner")
    outer = keras.Sequential([keras.Input((3,)), inner, keras.layers.Dense(2, name="outer_fc")])
    refs = kernels_lib.model_kernels(outer, ("Dense",))
    assert [ref.layer.name for ref in refs] == ["inner_fc", "outer_fc"]


@pytest.mark.parametrize("module", FLAVOURS)
def test_unbuilt_layer_raises_exact_message(module):
    model = module.Sequential([module.layers.Dense(3, name="fc")])
    with pytest.raises(ValueError) as error:
        kernels_lib.model_kernels(model, ("Dense",))
    assert str(error.value) == (
        "Layer 'fc' of type Dense is not built, so its kernel does not exist yet. "
        "Build the model first (give it an Input or call it on data)."
    )
    # Types not selected are not looked at.
    assert kernels_lib.model_kernels(model, ("Conv2D",)) == []


def test_tfmot_wrapper_is_seen_through(tfmot):
    wrapped = deephoyer_tf.fix_zeros_tfmot(make_pruned(tf_keras))
    refs = kernels_lib.model_kernels(wrapped, ("Conv2D", "Dense"))
    assert [ref.layer.name for ref in refs] == ["conv", "fc1", "fc2"]
    for ref, wrapper in zip(refs, [wrapped.layers[0], wrapped.layers[2], wrapped.layers[3]]):
        assert ref.wrapper is wrapper and ref.layer is wrapper.layer
        assert ref.variable is wrapper.layer.kernel
        assert ref.names() == {ref.layer.name, wrapper.name}
        (weight, mask, _), = wrapper.pruning_vars
        assert weight is ref.variable and ref.tfmot_mask() is mask


def test_retrace_replaces_the_train_function():
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    kernels_lib.retrace(model)  # never compiled: nothing to do
    assert getattr(model, "train_function", None) is None
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 2), "float32"), np.ones((4, 1), "float32"), verbose=0)
    first = model.train_function
    assert first is not None
    kernels_lib.retrace(model)
    assert model.train_function is not None and model.train_function is not first


def test_strategy_scope_is_the_models_or_the_default(two_cpus):
    strategy = tf.distribute.MirroredStrategy(two_cpus)
    with strategy.scope():
        model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    with kernels_lib.strategy_scope(model):
        assert tf.distribute.get_strategy() is strategy
    with kernels_lib.strategy_scope(object()):
        assert not tf.distribute.has_strategy()
