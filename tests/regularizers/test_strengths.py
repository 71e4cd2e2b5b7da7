"""Tests for deephoyer_tf.regularizers.strengths: the regularizers of a model and their strengths."""

import keras
import pytest
import tf_keras

import deephoyer_tf
from deephoyer_tf import GroupHoyerSquare
from deephoyer_tf import Hoyer
from deephoyer_tf import HoyerSquare
from deephoyer_tf.regularizers import strengths

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def test_strength_variables_of_a_model():
    import keras

    shared = HoyerSquare(1e-3)
    group = GroupHoyerSquare(1e-3, input_strength=2e-3)
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3, kernel_regularizer=shared),
            keras.layers.Dense(3, kernel_regularizer=shared),
            keras.layers.Dense(2, kernel_regularizer=group, bias_regularizer=keras.regularizers.L1(0.1)),
        ]
    )
    found = deephoyer_tf.strength_variables(model)
    assert [id(v) for v in found] == [id(v) for v in shared.strength_variables() + group.strength_variables()]
    assert len(found) == 3


def test_public_name_is_the_module_function():
    assert deephoyer_tf.strength_variables is strengths.strength_variables


@pytest.mark.parametrize("module", FLAVOURS)
def test_distinct_variables_in_layer_order_nested_models_expanded(module):
    first, second = Hoyer(1e-3), GroupHoyerSquare(1e-3, input_strength=2e-3)
    tied = GroupHoyerSquare(1e-3)  # input strength tied: one variable
    layers = module.layers
    inner = module.Sequential(
        [module.Input((4,)), layers.Dense(4, kernel_regularizer=second, name="inner_fc")], name="inner"
    )
    model = module.Sequential(
        [
            module.Input((4,)),
            layers.Dense(4, kernel_regularizer=first, bias_regularizer=first, name="fc1"),
            inner,
            layers.Dense(4, kernel_regularizer=second, name="fc2"),
            layers.Dense(2, kernel_regularizer=tied, name="fc3"),
        ]
    )
    expected = first.strength_variables() + second.strength_variables() + tied.strength_variables()
    assert len(expected) == 4
    found = strengths.strength_variables(model)
    assert [id(v) for v in found] == [id(v) for v in expected]
    assert [id(r) for r in strengths.deephoyer_regularizers(model)] == [id(first), id(second), id(tied)]


def test_iterable_of_layers_and_non_deephoyer_regularizers():
    hs = HoyerSquare(1e-3)
    layers = [
        keras.layers.Dense(3, kernel_regularizer=keras.regularizers.L2(0.1)),
        keras.layers.Dense(3, kernel_regularizer=hs, activity_regularizer=keras.regularizers.L1(0.1)),
        keras.layers.Flatten(),
    ]
    assert [id(v) for v in strengths.strength_variables(layers)] == [id(v) for v in hs.strength_variables()]
    assert strengths.strength_variables(iter(layers)) == hs.strength_variables()
    assert strengths.strength_variables([keras.layers.Dense(2)]) == []


def test_variables_are_the_ones_the_penalties_read():
    hs = HoyerSquare(1e-3)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2, kernel_regularizer=hs)])
    (variable,) = strengths.strength_variables(model)
    variable.assign(0.25)
    assert hs.strength == pytest.approx(0.25)
