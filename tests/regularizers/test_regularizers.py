"""Executable specification of the DeepHoyer regularizers (issue 2).

Values and gradients against NumPy references of the paper's equations, for
Dense (in, out) and Conv (k..., in, out) kernels of several shapes.
"""

import numpy as np
import pytest
import tensorflow as tf

from deephoyer_tf import GroupHoyerSquare
from deephoyer_tf import GroupLasso
from deephoyer_tf import Hoyer
from deephoyer_tf import HoyerSquare
from tests.helpers.hoyer_numpy import np_group_hs
from tests.helpers.hoyer_numpy import np_group_hs_gradient
from tests.helpers.hoyer_numpy import np_group_lasso
from tests.helpers.hoyer_numpy import np_hoyer
from tests.helpers.hoyer_numpy import np_hoyer_gradient
from tests.helpers.hoyer_numpy import np_hoyer_square
from tests.helpers.hoyer_numpy import np_hs_gradient
from tests.helpers.hoyer_numpy import random_kernel as _kernel

SHAPES = [(7, 5), (300, 100), (5, 5, 1, 20), (3, 3, 8, 16), (3, 4, 6), (2, 2, 2, 3, 4)]


def _value_and_grad(regularizer, w):
    v = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = regularizer(v)
    return float(value), tape.gradient(value, v).numpy()


# ---------------------------------------------------------------- values
@pytest.mark.parametrize("shape", SHAPES)
def test_hoyer_and_hoyer_square_match_numpy(shape):
    w = _kernel(shape)
    np.testing.assert_allclose(float(Hoyer(1.0)(w)), np_hoyer(w), rtol=1e-5)
    np.testing.assert_allclose(float(HoyerSquare(1.0)(w)), np_hoyer_square(w), rtol=1e-5)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("groups", ["outputs", "inputs", "both"])
def test_group_regularizers_match_numpy(shape, groups):
    w = _kernel(shape, seed=1)
    # Zero a whole output unit and a whole input unit: groups of norm 0.
    w[..., 0] = 0.0
    w[..., -1, :] = 0.0
    np.testing.assert_allclose(
        float(GroupHoyerSquare(1.0, groups)(w)), np_group_hs(w, groups), rtol=1e-5
    )
    np.testing.assert_allclose(
        float(GroupLasso(1.0, groups)(w)), np_group_lasso(w, groups), rtol=1e-5
    )


def test_groups_are_keras_units():
    """Outputs = last axis (Dense neurons, Conv filters); inputs = second-to-last."""
    w = np.zeros((3, 3, 4, 6), np.float32)
    w[:, :, 2, 5] = 1.0  # one input channel x one filter: 9 weights
    # One nonzero filter and one nonzero input channel: each measure is 1.
    assert float(GroupHoyerSquare(1.0, "outputs")(w)) == pytest.approx(1.0)
    assert float(GroupHoyerSquare(1.0, "inputs")(w)) == pytest.approx(1.0)
    w[:, :, 3, 5] = 1.0  # second input channel into the same filter
    assert float(GroupHoyerSquare(1.0, "outputs")(w)) == pytest.approx(1.0)
    assert float(GroupHoyerSquare(1.0, "inputs")(w)) == pytest.approx(2.0)


@pytest.mark.parametrize("strength", [0.0, 1e-4, 0.3])
def test_value_is_strength_times_measure(strength):
    w = _kernel((20, 10))
    assert float(HoyerSquare(strength)(w)) == pytest.approx(strength * np_hoyer_square(w), rel=1e-5)
    assert float(GroupHoyerSquare(strength)(w)) == pytest.approx(
        strength * np_group_hs(w, "both"), rel=1e-5
    )


def test_separate_input_strength():
    w = _kernel((20, 10))
    reg = GroupHoyerSquare(0.5, "both", input_strength=0.25)
    expected = 0.5 * np_group_hs(w, "outputs") + 0.25 * np_group_hs(w, "inputs")
    assert float(reg(w)) == pytest.approx(expected, rel=1e-5)
    reg.input_strength = 0.0
    assert float(reg(w)) == pytest.approx(0.5 * np_group_hs(w, "outputs"), rel=1e-5)


def test_depthwise_and_transpose_layouts():
    w = _kernel((3, 3, 4, 2), seed=3)  # depthwise: (k, k, in, multiplier)
    outputs = np.sqrt(np.sum(np.float64(w) ** 2, axis=(0, 1))).ravel()  # 8 channels
    inputs = np.sqrt(np.sum(np.float64(w) ** 2, axis=(0, 1, 3)))
    expected = outputs.sum() ** 2 / (outputs**2).sum() + inputs.sum() ** 2 / (inputs**2).sum()
    got = GroupHoyerSquare(1.0, layout="depthwise")(w)
    assert float(got) == pytest.approx(expected, rel=1e-5)
    # out_in (ConvTranspose) swaps the roles of the last two axes.
    t = _kernel((3, 3, 6, 4), seed=4)
    swapped = np.swapaxes(t, -1, -2)
    for groups in ("outputs", "inputs"):
        assert float(GroupHoyerSquare(1.0, groups, layout="out_in")(t)) == pytest.approx(
            np_group_hs(swapped, groups), rel=1e-5
        )


# ---------------------------------------------------------------- gradients
@pytest.mark.parametrize("shape", SHAPES[:4])
def test_hoyer_square_gradient_is_eq4(shape):
    w = _kernel(shape, seed=2)
    _, grad = _value_and_grad(HoyerSquare(1.0), w)
    np.testing.assert_allclose(grad, np_hs_gradient(w), rtol=1e-4, atol=1e-6)
    assert np.all(grad[w == 0] == 0.0)  # defined as 0 at w_j = 0


def test_hoyer_gradient():
    w = _kernel((30, 7), seed=5)
    _, grad = _value_and_grad(Hoyer(1.0), w)
    np.testing.assert_allclose(grad, np_hoyer_gradient(w), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("shape", SHAPES[:4])
@pytest.mark.parametrize("kind", ["outputs", "inputs"])
def test_group_hs_gradient_is_eq10(shape, kind):
    w = _kernel(shape, seed=6)
    w[..., 0] = 0.0  # a zero group has zero gradient
    _, grad = _value_and_grad(GroupHoyerSquare(1.0, kind), w)
    np.testing.assert_allclose(grad, np_group_hs_gradient(w, kind), rtol=1e-4, atol=1e-6)


def test_group_hs_both_gradient_is_sum_of_terms():
    w = _kernel((12, 9), seed=7)
    _, grad = _value_and_grad(GroupHoyerSquare(1.0, "both", input_strength=2.0), w)
    expected = np_group_hs_gradient(w, "outputs") + 2.0 * np_group_hs_gradient(w, "inputs")
    np.testing.assert_allclose(grad, expected, rtol=1e-4, atol=1e-6)


# ---------------------------------------------------------------- invariants
ALL = [Hoyer(1.0), HoyerSquare(1.0), GroupHoyerSquare(1.0), GroupLasso(1.0)]
SCALE_INVARIANT = [Hoyer(1.0), HoyerSquare(1.0), GroupHoyerSquare(1.0, "outputs"), GroupHoyerSquare(1.0)]


@pytest.mark.parametrize("reg", SCALE_INVARIANT, ids=repr)
@pytest.mark.parametrize("scale", [1e-30, 1e-6, 3.0, 1e6, 1e30])
def test_scale_invariance(reg, scale):
    w = _kernel((40, 10), seed=8)
    np.testing.assert_allclose(float(reg(w * np.float32(scale))), float(reg(w)), rtol=1e-5)


def test_group_lasso_is_homogeneous_of_degree_one():
    w = _kernel((40, 10), seed=8)
    reg = GroupLasso(1.0)
    for scale in (1e-20, 2.0, 1e20):
        np.testing.assert_allclose(float(reg(w * np.float32(scale))), scale * float(reg(w)), rtol=1e-5)


def test_hoyer_square_range_is_one_to_n():
    n = 50
    one_hot = np.zeros(n, np.float32)
    one_hot[7] = -4.0
    assert float(HoyerSquare(1.0)(one_hot)) == pytest.approx(1.0)
    assert float(HoyerSquare(1.0)(np.full(n, -2.5, np.float32))) == pytest.approx(n)
    rng = np.random.default_rng(0)
    for _ in range(20):
        w = rng.normal(size=n).astype(np.float32) * (rng.random(n) < 0.5)
        k = np.count_nonzero(w)
        value = float(HoyerSquare(1.0)(w))
        assert 1.0 - 1e-6 <= value <= n + 1e-4
        assert value <= k + 1e-4  # bounded by the L0 norm it approximates


@pytest.mark.parametrize("reg", ALL, ids=repr)
@pytest.mark.parametrize("shape", [(6, 4), (3, 3, 2, 5)])
def test_zero_kernel_gives_zero_and_zero_gradient(reg, shape):
    value, grad = _value_and_grad(reg, np.zeros(shape, np.float32))
    assert value == 0.0
    assert np.all(np.isfinite(grad)) and np.all(grad == 0.0)


@pytest.mark.parametrize("reg", ALL, ids=repr)
@pytest.mark.parametrize("dtype", [tf.float16, tf.bfloat16])
def test_half_precision_is_computed_in_float32(reg, dtype):
    w = (_kernel((30, 20), seed=9) * 300.0).astype(np.float32)  # squares overflow float16
    w16 = tf.cast(w, dtype)
    reference = float(reg(tf.cast(w16, tf.float32)))  # same rounded inputs, float32 math
    got = reg(w16)
    assert got.dtype == tf.float32
    assert np.isfinite(float(got))
    assert float(got) == pytest.approx(reference, rel=1e-5)


def test_half_precision_gradient_is_finite():
    v = tf.Variable(tf.cast(_kernel((30, 20)) * 300.0, tf.float16))
    with tf.GradientTape() as tape:
        value = GroupHoyerSquare(1.0)(v)
    grad = tape.gradient(value, v)
    assert grad.dtype == tf.float16 and np.all(np.isfinite(grad.numpy()))


# ---------------------------------------------------------------- strength
def test_strength_changes_without_retracing():
    reg = HoyerSquare(1e-2)
    w = tf.constant(_kernel((10, 10)))

    @tf.function(jit_compile=True)
    def penalty():
        return reg(w)

    first = float(penalty())
    reg.strength = 2e-2
    assert float(penalty()) == pytest.approx(2 * first, rel=1e-6)
    reg.strength = 0.0
    assert float(penalty()) == 0.0
    # The variable strength_variables() hands to a callback is the one the penalty reads.
    (variable,) = reg.strength_variables()
    variable.assign(3e-2)
    assert float(penalty()) == pytest.approx(3 * first, rel=1e-6)
    assert reg.strength == pytest.approx(3e-2)
    assert penalty.experimental_get_tracing_count() == 1


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("cls", [Hoyer, HoyerSquare, GroupHoyerSquare, GroupLasso])
def test_negative_strength_is_rejected(cls):
    with pytest.raises(ValueError, match=r"Invalid value for argument `strength`\. Expected a finite float >= 0\. Received: strength=-0\.1"):
        cls(-0.1)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_strength_is_rejected(bad):
    with pytest.raises(ValueError, match="Expected a finite float >= 0"):
        HoyerSquare(bad)


def test_strength_of_wrong_type_is_rejected():
    with pytest.raises(TypeError, match=r"Invalid type for argument `strength`\. Expected a float\. Received: strength='0\.1' of type str"):
        HoyerSquare("0.1")
    reg = HoyerSquare(0.1)
    with pytest.raises(ValueError, match=r"Received: strength=-1\.0"):
        reg.strength = -1.0


@pytest.mark.parametrize("cls", [GroupHoyerSquare, GroupLasso])
def test_unknown_groups_is_rejected(cls):
    with pytest.raises(ValueError, match=r"Invalid value for argument `groups`\. Expected one of \['outputs', 'inputs', 'both', 'blocks'\]\. Received: groups='rows'"):
        cls(0.1, groups="rows")


def test_unknown_layout_is_rejected():
    with pytest.raises(ValueError, match=r"Invalid value for argument `layout`.*Received: layout='nchw'"):
        GroupHoyerSquare(0.1, layout="nchw")


def test_input_strength_needs_both_groups():
    with pytest.raises(ValueError, match=r"`input_strength` applies only with groups='both'\. Received: input_strength=0\.1, groups='outputs'"):
        GroupHoyerSquare(0.1, groups="outputs", input_strength=0.1)


def test_tied_input_strength_cannot_be_set_alone():
    reg = GroupHoyerSquare(0.1)
    with pytest.raises(ValueError, match="`input_strength` is tied to `strength`"):
        reg.input_strength = 0.2
    reg.strength = 0.2
    assert reg.input_strength == pytest.approx(0.2)


@pytest.mark.parametrize("cls", [GroupHoyerSquare, GroupLasso])
def test_rank_one_tensor_cannot_be_grouped(cls):
    with pytest.raises(ValueError, match=rf"{cls.__name__} cannot group a tensor of rank 1 \(shape \(10,\)\)"):
        cls(0.1, "outputs")(np.ones(10, np.float32))


def test_depthwise_layout_needs_rank_three():
    with pytest.raises(ValueError, match=r"layout='depthwise' needs a kernel of rank >= 3"):
        GroupHoyerSquare(0.1, layout="depthwise")(np.ones((4, 4), np.float32))


@pytest.mark.parametrize(
    "reg",
    [
        Hoyer(2e-4),
        HoyerSquare(3e-4),
        GroupHoyerSquare(1e-3, "both", input_strength=2e-3, layout="depthwise"),
        GroupHoyerSquare(1e-3, "outputs"),
        GroupLasso(1e-3, "inputs", layout="out_in"),
    ],
    ids=repr,
)
def test_get_config_holds_every_constructor_argument(reg):
    import inspect

    parameters = set(inspect.signature(type(reg).__init__).parameters) - {"self"}
    config = reg.get_config()
    assert set(config) == parameters
    clone = type(reg).from_config(config)
    assert clone.get_config() == config and repr(clone) == repr(reg)
