"""Tests for deephoyer_tf.sparsity.zero_mask: the constraint that keeps zeros at zero."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

from deephoyer_tf.sparsity import zero_mask as masks
from tests.helpers.fixed_zeros import kernels
from tests.helpers.fixed_zeros import make_pruned

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


def test_held_zeros_survive_a_diverging_weight():
    """inf elsewhere in the kernel does not make a held zero NaN (inf * 0)."""
    import tensorflow as tf

    mask = tf.Variable([[1.0, 0.0], [0.0, 1.0]])
    w = tf.constant([[np.inf, 5.0], [-np.inf, 2.0]])
    held = masks.ZeroMask(mask)(w).numpy()
    assert held[0, 1] == 0.0 and held[1, 0] == 0.0
    assert held[0, 0] == np.inf and held[1, 1] == 2.0


def test_zero_mask_applies_the_previous_constraint_first():
    mask = tf.Variable([1.0, 0.0, 1.0])
    calls = []

    def previous(w):
        calls.append(True)
        return tf.abs(w) * 2.0

    constraint = masks.ZeroMask(mask, previous)
    np.testing.assert_array_equal(constraint(tf.constant([-1.0, 3.0, 0.5])).numpy(), [2.0, 0.0, 1.0])
    assert calls == [True]
    assert repr(masks.ZeroMask(tf.Variable(tf.ones((2, 3))))) == "ZeroMask(shape=(2, 3), previous=None)"


@pytest.mark.parametrize("module", FLAVOURS)
def test_hold_refresh_and_release(module):
    model = make_pruned(module)
    before = kernels(model)
    assert all(masks.mask_of(model.get_layer(n).kernel) is None for n in before)
    assert masks.hold_zeros(model, ["Dense"]) is model
    assert not masks.is_fixed(model.get_layer("conv").kernel)
    for name in ("fc1", "fc2"):
        kernel = model.get_layer(name).kernel
        assert masks.is_fixed(kernel)
        np.testing.assert_array_equal(masks.mask_of(kernel), (before[name] != 0).astype("float32"))
    # New zeros are held after a refresh; the constraint object is kept.
    fc1 = model.get_layer("fc1")
    constraint = fc1.kernel.constraint
    w = fc1.kernel.numpy()
    free = np.argwhere(w != 0)[0]
    w[tuple(free)] = 0.0
    fc1.kernel.assign(w)
    masks.hold_zeros(model, ["Dense"])
    assert fc1.kernel.constraint is constraint
    assert masks.mask_of(fc1.kernel)[tuple(free)] == 0.0
    np.testing.assert_array_equal(masks.mask_of(fc1.kernel), (w != 0).astype("float32"))
    # Masks only lose entries: a held weight made nonzero again stays held.
    w[tuple(free)] = 1.0
    fc1.kernel.assign(w)
    masks.hold_zeros(model, ["Dense"])
    assert masks.mask_of(fc1.kernel)[tuple(free)] == 0.0
    assert masks.release_zeros(model) == 2
    assert all(not masks.is_fixed(model.get_layer(n).kernel) for n in before)
    assert fc1.kernel.constraint is None
    assert masks.release_zeros(model) == 0


def test_masks_are_not_layer_weights():
    model = make_pruned(keras)
    count = len(model.weights)
    masks.hold_zeros(model)
    assert len(model.weights) == count
    assert all(masks.is_fixed(model.get_layer(n).kernel) for n in ("conv", "fc1", "fc2"))
