"""deephoyer_tf._internal.backend: the backend name, the TensorFlow-only error, non-weight state."""

import keras
import numpy as np
import pytest

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import private_api


def test_require_tensorflow_passes_on_tensorflow_and_names_the_backend_elsewhere(monkeypatch):
    if backend.is_tensorflow():
        backend.require_tensorflow("anything")  # no error
    monkeypatch.setattr(backend, "name", lambda: "jax")
    monkeypatch.setenv("KERAS_BACKEND", "jax")
    with pytest.raises(
        backend.BackendError,
        match=r"^deephoyer_tf.export_tflite needs the TensorFlow backend of Keras, but Keras "
        r"runs on the 'jax' backend here \(KERAS_BACKEND=jax\)\. Run this step in a process "
        r"started with KERAS_BACKEND=tensorflow .*deephoyer-tf export model.keras",
    ):
        backend.require_tensorflow("deephoyer_tf.export_tflite")
    with pytest.raises(backend.BackendError, match=r"backend here \(KERAS_BACKEND=jax\)\. Do X\.$"):
        backend.require_tensorflow("f", "Do X.")


def test_non_weight_state_is_a_variable_of_the_layer_but_not_a_weight():
    layer = keras.layers.Dense(2)
    layer.build((None, 3))
    variable = keras.Variable(0.5, trainable=False, name="strength")
    assert private_api.track_non_weight_state(layer, variable) is True
    assert private_api.track_non_weight_state(layer, variable) is False  # once
    assert any(v is variable for v in layer.non_trainable_variables)
    assert sum(v is variable for v in layer.variables) == 1
    assert all(w is not variable for w in layer.weights)
    assert len(layer.get_weights()) == 2
    model = keras.Sequential([keras.Input((3,)), layer])
    assert any(v is variable for v in model.non_trainable_variables)
    np.testing.assert_array_equal(model.get_weights()[0], layer.kernel.numpy())
