"""ConstantSparsity and PolynomialDecay: TFMOT's formulas, computed here in NumPy, and TFMOT itself (in tests/backends: CI runs it on JAX and PyTorch too)."""

import warnings

import keras
import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf.pruning import PruningSchedule


def _tfmot_should_prune(step, begin, end, frequency):
    in_range = (step >= begin) & ((step <= end) | (end < 0))
    return in_range & (np.mod(step - begin, frequency) == 0)


def _tfmot_polynomial(step, initial, final, begin, end, power):
    p = np.clip((step - begin) / (end - begin), 0.0, 1.0)
    return final + (initial - final) * (1.0 - p) ** power


@pytest.mark.parametrize("power", [1, 2, 3, 0.5])
def test_polynomial_decay_follows_the_formula(power):
    schedule = deephoyer_tf.PolynomialDecay(0.1, 0.85, begin_step=20, end_step=220, power=power, frequency=25)
    steps = np.arange(0, 300)
    got = np.array([schedule(s) for s in steps], dtype=object)
    np.testing.assert_array_equal(got[:, 0].astype(bool), _tfmot_should_prune(steps, 20, 220, 25))
    np.testing.assert_allclose(got[:, 1].astype(float), _tfmot_polynomial(steps, 0.1, 0.85, 20, 220, power),
                               rtol=0, atol=1e-12)
    assert schedule.sparsity(220) == pytest.approx(0.85)
    assert schedule.sparsity(20) == pytest.approx(0.1)


def test_constant_sparsity_forever_and_bounded():
    forever = deephoyer_tf.ConstantSparsity(0.7, begin_step=5, frequency=10)
    steps = np.arange(0, 200)
    assert [forever(s)[0] for s in steps] == list(_tfmot_should_prune(steps, 5, -1, 10))
    assert {forever(s)[1] for s in steps} == {0.7}
    bounded = deephoyer_tf.ConstantSparsity(0.7, begin_step=5, end_step=45, frequency=10)
    assert [s for s in steps if bounded(s)[0]] == [5, 15, 25, 35, 45]
    assert bounded.final_update() == 45 and forever.final_update() is None


def test_last_update_is_the_latest_update_step_not_after_step():
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.5, begin_step=10, end_step=40, frequency=10)
    updates = [s for s in range(100) if schedule.should_prune(s)]
    for step in range(100):
        expected = max([u for u in updates if u <= step], default=None)
        assert schedule.last_update(step) == expected, step


def test_misaligned_end_warns_with_the_last_sparsity_reached():
    with pytest.warns(UserWarning, match="last update is at step 90"):
        schedule = deephoyer_tf.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=100, frequency=30)
    assert schedule.final_update() == 90
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        deephoyer_tf.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=90, frequency=30)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: deephoyer_tf.ConstantSparsity(1.0, 0), "Expected a float in [0, 1). Received: target_sparsity=1.0"),
        (lambda: deephoyer_tf.ConstantSparsity(0.5, -1), "Expected an int >= 0. Received: begin_step=-1"),
        (lambda: deephoyer_tf.ConstantSparsity(0.5, 10, 5), "Expected -1 or an int >= begin_step=10. Received: end_step=5"),
        (lambda: deephoyer_tf.ConstantSparsity(0.5, 0, frequency=0), "Expected an int >= 1. Received: frequency=0"),
        (lambda: deephoyer_tf.PolynomialDecay(0.0, 0.5, 0, -1), "needs an end"),
        (lambda: deephoyer_tf.PolynomialDecay(0.0, 0.5, 7, 7), "end_step > begin_step=7"),
        (lambda: deephoyer_tf.PolynomialDecay(-0.1, 0.5, 0, 10), "initial_sparsity=-0.1"),
    ],
)
def test_bad_arguments_are_named(make, message):
    with pytest.raises(ValueError, match=message.replace("[", r"\[").replace("(", r"\(").replace(")", r"\)")):
        make()


@pytest.mark.parametrize(
    "schedule",
    [
        deephoyer_tf.ConstantSparsity(0.6, begin_step=3, end_step=50, frequency=7),
        deephoyer_tf.PolynomialDecay(0.1, 0.9, begin_step=0, end_step=100, power=2, frequency=10),
    ],
)
def test_config_round_trips(schedule):
    again = type(schedule).from_config(schedule.get_config())
    assert again == schedule and again.get_config() == schedule.get_config()
    restored = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(schedule))
    assert isinstance(restored, PruningSchedule) and restored == schedule


def test_same_values_as_tfmot(tfmot):
    steps = range(0, 260)
    pairs = [
        (deephoyer_tf.PolynomialDecay(0.05, 0.9, 10, 210, power=3, frequency=20),
         tfmot.sparsity.keras.PolynomialDecay(0.05, 0.9, 10, 210, power=3, frequency=20)),
        (deephoyer_tf.ConstantSparsity(0.75, 4, 120, frequency=13),
         tfmot.sparsity.keras.ConstantSparsity(0.75, 4, 120, frequency=13)),
    ]
    for ours, theirs in pairs:
        for step in steps:
            should, sparsity = theirs(np.int64(step))
            assert ours(step)[0] == bool(should), (ours, step)
            assert ours(step)[1] == pytest.approx(float(sparsity), abs=1e-6), (ours, step)
