"""Tests for deephoyer_tf.regularizers.measures: the measures as pure TF functions.

Values and gradients of the functions themselves (not the regularizer classes)
against the NumPy references in tests/helpers/hoyer_numpy.py.
"""

import numpy as np
import pytest
import tensorflow as tf

from deephoyer_tf.regularizers import measures
from tests.helpers.hoyer_numpy import np_group_hs_gradient
from tests.helpers.hoyer_numpy import np_group_norms
from tests.helpers.hoyer_numpy import np_hoyer
from tests.helpers.hoyer_numpy import np_hoyer_gradient
from tests.helpers.hoyer_numpy import np_hoyer_square
from tests.helpers.hoyer_numpy import np_hs_gradient
from tests.helpers.hoyer_numpy import random_kernel

SHAPES = [(7, 5), (5, 5, 1, 20), (3, 4, 6)]
OUTPUTS, INPUTS = (-1,), (-2,)


def _value_and_grad(fn, w):
    v = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = fn(v)
    return value, tape.gradient(value, v).numpy()


def _np_group_hs(w, keep_axes):
    norms = np_group_norms(w, keep_axes)
    return np.sum(norms) ** 2 / np.sum(norms**2)


@pytest.mark.parametrize("shape", SHAPES)
def test_hoyer_and_hoyer_square_values_and_gradients(shape):
    w = random_kernel(shape, seed=11)
    value, grad = _value_and_grad(measures.hoyer, w)
    assert value.dtype == tf.float32
    np.testing.assert_allclose(float(value), np_hoyer(w), rtol=1e-5)
    np.testing.assert_allclose(grad, np_hoyer_gradient(w), rtol=1e-4, atol=1e-6)
    value, grad = _value_and_grad(measures.hoyer_square, w)
    np.testing.assert_allclose(float(value), np_hoyer_square(w), rtol=1e-5)
    np.testing.assert_allclose(grad, np_hs_gradient(w), rtol=1e-4, atol=1e-6)
    assert np.all(grad[w == 0] == 0.0)


def test_hand_computed_values():
    w = np.array([3, -4])  # integers: computed in float32
    assert float(measures.hoyer(w)) == pytest.approx(7 / 5)
    assert float(measures.hoyer_square(w)) == pytest.approx(49 / 25)
    assert measures.hoyer(w).dtype == tf.float32
    # Groups (columns) of norms 5 and 0: sum 5, squares 25.
    m = np.array([[3.0, 0.0], [-4.0, 0.0]], np.float32)
    assert float(measures.group_lasso(m, OUTPUTS)) == pytest.approx(5.0)
    assert float(measures.group_hoyer_square(m, OUTPUTS)) == pytest.approx(1.0)
    # Rows of norms 3 and 4: (3 + 4)^2 / 25.
    assert float(measures.group_lasso(m, INPUTS)) == pytest.approx(7.0)
    assert float(measures.group_hoyer_square(m, INPUTS)) == pytest.approx(49 / 25)


@pytest.mark.parametrize("shape", SHAPES)
def test_group_terms_are_each_grouping_with_a_shared_gradient(shape):
    w = random_kernel(shape, seed=12)
    w[..., 0] = 0.0  # a zero group
    terms = measures.group_hoyer_square_terms(w, [OUTPUTS, INPUTS])
    assert terms.shape == (2,) and terms.dtype == tf.float32
    np.testing.assert_allclose(terms.numpy(), [_np_group_hs(w, OUTPUTS), _np_group_hs(w, INPUTS)], rtol=1e-5)
    for k, keep in enumerate((OUTPUTS, INPUTS)):
        assert float(measures.group_hoyer_square(w, keep)) == pytest.approx(float(terms[k]), rel=1e-6)
    # The gradient of a weighted sum of the terms is the weighted sum of eq. 10.
    _, grad = _value_and_grad(
        lambda v: tf.reduce_sum(measures.group_hoyer_square_terms(v, [OUTPUTS, INPUTS]) * [0.5, 3.0]), w
    )
    expected = 0.5 * np_group_hs_gradient(w, "outputs") + 3.0 * np_group_hs_gradient(w, "inputs")
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


def test_group_lasso_gradient_is_w_over_its_group_norm():
    w = random_kernel((6, 4), seed=13)
    w[:, 1] = 0.0
    value, grad = _value_and_grad(lambda v: measures.group_lasso(v, OUTPUTS), w)
    norms = np_group_norms(w, OUTPUTS)
    assert float(value) == pytest.approx(np.sum(norms), rel=1e-5)
    expected = np.divide(np.float64(w), norms, out=np.zeros(w.shape), where=norms > 0)
    np.testing.assert_allclose(grad, expected, rtol=1e-5, atol=1e-7)
    assert np.all(grad[:, 1] == 0.0)


@pytest.mark.parametrize("scale", [1e-25, 1e25])
@pytest.mark.parametrize("fn", [measures.hoyer, measures.hoyer_square], ids=["hoyer", "hoyer_square"])
def test_rescaled_evaluation_keeps_value_and_scales_gradient(fn, scale):
    """Degree-0 homogeneous: f(c w) = f(w), grad f(c w) = grad f(w) / c, past float32 squares."""
    w = random_kernel((20, 5), seed=14)
    value, grad = _value_and_grad(fn, w)
    scaled_value, scaled_grad = _value_and_grad(fn, w * np.float32(scale))
    assert np.isfinite(float(scaled_value)) and np.all(np.isfinite(scaled_grad))
    assert float(scaled_value) == pytest.approx(float(value), rel=1e-5)
    np.testing.assert_allclose(scaled_grad * scale, grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize(
    "fn",
    [
        measures.hoyer,
        measures.hoyer_square,
        lambda w: measures.group_hoyer_square(w, OUTPUTS),
        lambda w: measures.group_lasso(w, INPUTS),
    ],
    ids=["hoyer", "hoyer_square", "group_hs", "group_lasso"],
)
def test_zero_tensor_gives_zero_and_zero_gradient(fn):
    value, grad = _value_and_grad(fn, np.zeros((4, 3), np.float32))
    assert float(value) == 0.0
    assert np.all(grad == 0.0)


def test_hoyer_measure():
    n = 16
    one_hot = np.zeros(n, np.float32)
    one_hot[3] = -2.0
    assert float(measures.hoyer_measure(one_hot)) == pytest.approx(1.0)
    assert float(measures.hoyer_measure(np.full(n, 0.7, np.float32))) == pytest.approx(0.0, abs=1e-6)
    assert float(measures.hoyer_measure(np.zeros((3, 4), np.float32))) == 1.0
    assert float(measures.hoyer_measure(np.array([5.0], np.float32))) == 0.0
    w = random_kernel((8, 6), seed=15)
    root = np.sqrt(w.size)
    expected = (root - np_hoyer(w)) / (root - 1)
    assert float(measures.hoyer_measure(w)) == pytest.approx(expected, rel=1e-5)
    assert 0.0 <= float(measures.hoyer_measure(w)) <= 1.0


def test_half_precision_input_is_computed_in_float32():
    w = random_kernel((30, 20), seed=16) * 300.0  # squares overflow float16
    w16 = tf.cast(w, tf.float16)
    got = measures.hoyer_square(w16)
    assert got.dtype == tf.float32
    assert float(got) == pytest.approx(np_hoyer_square(tf.cast(w16, tf.float32).numpy()), rel=1e-5)
