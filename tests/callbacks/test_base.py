"""Tests for deephoyer_tf.callbacks.base: the callback base of both flavours' `fit`."""

import keras
import numpy as np
import pytest
import tf_keras

from deephoyer_tf.callbacks.base import Callback

MODULES = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]


class _Talk(Callback):
    def __init__(self, verbose=0):
        super().__init__(verbose=verbose)
        self.epochs = []

    def on_epoch_end(self, epoch, logs=None):
        self.epochs.append(epoch)
        self._message(f"Talk: epoch {epoch} ended")


def test_verbose_is_validated_exact_messages():
    assert Callback().verbose == 0 and Callback(verbose=1).verbose == 1
    assert isinstance(Callback(), keras.callbacks.Callback)
    with pytest.raises(ValueError) as error:
        Callback(verbose=2)
    assert str(error.value) == "Invalid value for argument `verbose`. Expected 0 or 1. Received: verbose=2"
    with pytest.raises(TypeError) as error:
        Callback(verbose=True)
    assert str(error.value) == (
        "Invalid type for argument `verbose`. Expected 0 or 1. Received: verbose=True of type bool"
    )
    with pytest.raises(TypeError, match=r"Received: verbose='1' of type str$"):
        Callback(verbose="1")


def test_message_prints_only_with_verbose_1(capsys):
    Callback()._message("silent")
    assert capsys.readouterr().out == ""
    Callback(verbose=1)._message("spoken")
    assert capsys.readouterr().out == "spoken\n"


@pytest.mark.parametrize("module", MODULES)
def test_both_flavours_fit_accept_it(module, capsys):
    model = module.Sequential([module.Input((2,)), module.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x, y = np.ones((4, 2), "float32"), np.zeros((4, 1), "float32")
    quiet, talk = _Talk(), _Talk(verbose=1)
    model.fit(x, y, epochs=2, batch_size=4, verbose=0, callbacks=[quiet, talk])
    assert quiet.epochs == talk.epochs == [0, 1]
    out = capsys.readouterr().out
    assert out.count("Talk: epoch") == 2 and "Talk: epoch 1 ended" in out
