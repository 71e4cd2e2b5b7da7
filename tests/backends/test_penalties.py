"""The penalties on the running Keras backend: values and gradients equal TensorFlow's.

Run under each backend (``KERAS_BACKEND=jax python -m pytest tests/backends``);
on TensorFlow the comparison with TensorFlow is the NumPy one.
"""

import keras
import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf.regularizers import measures
from tests.helpers import backends
from tests.helpers.hoyer_numpy import np_group_hs
from tests.helpers.hoyer_numpy import np_group_lasso
from tests.helpers.hoyer_numpy import np_hoyer
from tests.helpers.hoyer_numpy import np_hoyer_square
from tests.helpers.hoyer_numpy import np_hs_gradient

BACKEND = keras.backend.backend()


@pytest.fixture(scope="module")
def here():
    return backends.penalties()


@pytest.mark.skipif(BACKEND == "tensorflow", reason="compares another backend with TensorFlow")
def test_values_and_gradients_equal_tensorflow(here, tmp_path_factory):
    reference = backends.tensorflow_penalties(tmp_path_factory.mktemp("tf"))
    assert sorted(here) == sorted(reference)
    for key, expected in reference.items():
        if key.endswith("/value"):
            np.testing.assert_allclose(here[key], expected, rtol=1e-5, err_msg=key)
        else:
            scale = np.max(np.abs(expected))
            np.testing.assert_allclose(here[key], expected, rtol=1e-5, atol=1e-5 * scale, err_msg=key)


def test_values_equal_numpy(here):
    for kname, w in backends.kernels().items():
        np.testing.assert_allclose(here[f"hoyer/{kname}/value"], 1e-3 * np_hoyer(w), rtol=1e-5)
        np.testing.assert_allclose(here[f"hoyer_square/{kname}/value"], 1e-3 * np_hoyer_square(w), rtol=1e-5)
        np.testing.assert_allclose(
            here[f"group_hs_outputs/{kname}/value"], 1e-3 * np_group_hs(w, "outputs"), rtol=1e-5
        )
        np.testing.assert_allclose(
            here[f"group_hs_both/{kname}/value"],
            1e-3 * np_group_hs(w, "outputs") + 2e-3 * np_group_hs(w, "inputs"),
            rtol=1e-5,
        )
        np.testing.assert_allclose(here[f"group_lasso/{kname}/value"], 1e-3 * np_group_lasso(w, "both"), rtol=1e-5)
        grad = here[f"hoyer_square/{kname}/grad"]
        np.testing.assert_allclose(grad, 1e-3 * np_hs_gradient(w), rtol=1e-4, atol=1e-9)
        assert np.all(grad[w == 0] == 0.0)  # eq. 4: no pull on a zero weight


def test_zero_kernel_and_extreme_scales_are_safe():
    zero = np.zeros((4, 3), np.float32)
    value, grad = backends.value_and_grad(deephoyer_tf.HoyerSquare(1.0), zero)
    assert value == 0.0 and np.all(grad == 0.0)
    w = backends.kernels()["dense"]
    for scale in (1e-25, 1e25):
        assert float(backends.to_numpy(measures.hoyer_square(w * np.float32(scale)))) == pytest.approx(
            np_hoyer_square(w), rel=1e-5
        )
    half = keras.ops.convert_to_tensor(w.astype(np.float16))
    assert keras.backend.standardize_dtype(measures.hoyer_square(half).dtype) == "float32"


def test_group_regularizer_rejects_a_bias():
    with pytest.raises(ValueError, match="cannot group a tensor of rank 1"):
        deephoyer_tf.GroupHoyerSquare(1.0)(np.ones((3,), np.float32))
