"""StrengthSchedule: per-epoch strength factors without retracing."""

import keras
import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf import StrengthSchedule
from deephoyer_tf.callbacks.base import Callback


class _Record(Callback):
    def __init__(self, regularizers):
        super().__init__()
        self.regularizers = regularizers
        self.seen = []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append([r.strength for r in self.regularizers])


def test_linear_warmup_scales_every_strength():
    hs = deephoyer_tf.HoyerSquare(1e-3)
    group = deephoyer_tf.GroupHoyerSquare(2e-3, input_strength=4e-3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer=hs),
                              keras.layers.Dense(2, kernel_regularizer=group)])
    model.compile("sgd", "mse")
    record = _Record([hs, group])
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 2), np.float32)
    model.fit(x, y, epochs=5, verbose=0, callbacks=[StrengthSchedule.linear_warmup(4), record])
    factors = [0.25, 0.5, 0.75, 1.0, 1.0]
    assert [s[0] for s in record.seen] == pytest.approx([1e-3 * f for f in factors])
    assert [s[1] for s in record.seen] == pytest.approx([2e-3 * f for f in factors])
    assert group.input_strength == pytest.approx(4e-3)


def test_bad_arguments():
    with pytest.raises(TypeError, match=r"Invalid type for argument `schedule`\. Expected a callable"):
        StrengthSchedule(0.5)
    with pytest.raises(ValueError, match=r"Invalid value for argument `epochs`\. Expected an int >= 1\. Received: epochs=0"):
        StrengthSchedule.linear_warmup(0)


def test_works_in_tf_keras_fit():
    import tf_keras

    hs = deephoyer_tf.HoyerSquare(1e-3)
    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(3, kernel_regularizer=hs)])
    model.compile("sgd", "mse")
    record = _Record([hs])
    assert not record.wants_train_batch_hooks()
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32)
    model.fit(x, y, epochs=3, verbose=0, callbacks=[StrengthSchedule.linear_warmup(2), record])
    assert [s[0] for s in record.seen] == pytest.approx([5e-4, 1e-3, 1e-3])


def test_handed_to_another_models_fit_it_schedules_that_model():
    """Before: the variables and bases of the first model were kept for every later fit."""
    schedule = StrengthSchedule(lambda epoch: 0.5 ** (epoch + 1))
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32)
    runs = []
    for strength in (1e-3, 4e-3):
        reg = deephoyer_tf.HoyerSquare(strength)
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer=reg)])
        model.compile("sgd", "mse")
        record = _Record([reg])
        model.fit(x, y, epochs=2, verbose=0, callbacks=[schedule, record])
        runs.append((reg, [s[0] for s in record.seen]))
    (first, first_seen), (second, second_seen) = runs
    assert first_seen == pytest.approx([5e-4, 2.5e-4])
    assert second_seen == pytest.approx([2e-3, 1e-3])
    assert first.strength == pytest.approx(2.5e-4)  # the first model is left alone


def test_a_second_fit_of_the_same_model_keeps_the_bases():
    reg = deephoyer_tf.HoyerSquare(1e-3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer=reg)])
    model.compile("sgd", "mse")
    schedule = StrengthSchedule(lambda epoch: 0.5)
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[schedule])
    model.fit(x, y, epochs=1, verbose=0, callbacks=[schedule])
    assert reg.strength == pytest.approx(5e-4)  # base 1e-3 kept, not 5e-4 * 0.5


def test_messages_only_with_verbose_and_through_keras_messaging(capsys):
    reg = deephoyer_tf.HoyerSquare(1e-3)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, kernel_regularizer=reg)])
    model.compile("sgd", "mse")
    x, y = np.ones((8, 4), np.float32), np.zeros((8, 3), np.float32)
    model.fit(x, y, epochs=1, verbose=0, callbacks=[StrengthSchedule(lambda e: 1.0)])
    assert "StrengthSchedule" not in capsys.readouterr().out  # verbose=0 by default
    model.fit(x, y, epochs=1, verbose=0, callbacks=[StrengthSchedule(lambda e: 1.0, verbose=1)])
    assert "StrengthSchedule: epoch 0: strength factor 1" in capsys.readouterr().out
    keras.utils.disable_interactive_logging()
    try:
        model.fit(x, y, epochs=1, verbose=0, callbacks=[StrengthSchedule(lambda e: 1.0, verbose=1)])
    finally:
        keras.utils.enable_interactive_logging()
    assert "StrengthSchedule" not in capsys.readouterr().out  # to absl logging instead
