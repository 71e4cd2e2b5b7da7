"""Backend-neutral test helpers: gradients on the running Keras backend, TF references.

The backend tests (tests/backends) run under every Keras backend
(``KERAS_BACKEND=tensorflow|jax|torch``, one pytest process each). The
TensorFlow values they compare with come from a subprocess on the TensorFlow
backend: ``python -m tests.helpers.backends OUT.npz`` writes them.
"""

import os
import subprocess
import sys

import keras
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

KERNEL_SHAPES = {"dense": (7, 5), "conv": (3, 3, 4, 6)}


def kernels():
    """Fixed float32 kernels with about 30% zeros, by name."""
    from tests.helpers.hoyer_numpy import random_kernel

    return {name: random_kernel(shape, seed=i + 3) for i, (name, shape) in enumerate(KERNEL_SHAPES.items())}


def regularizers():
    """The regularizer configurations compared across backends, by name."""
    import deephoyer_tf

    return {
        "hoyer": deephoyer_tf.Hoyer(1e-3),
        "hoyer_square": deephoyer_tf.HoyerSquare(1e-3),
        "group_hs_both": deephoyer_tf.GroupHoyerSquare(1e-3, input_strength=2e-3),
        "group_hs_outputs": deephoyer_tf.GroupHoyerSquare(1e-3, groups="outputs"),
        "group_lasso": deephoyer_tf.GroupLasso(1e-3),
    }


def to_numpy(x):
    return np.asarray(keras.ops.convert_to_numpy(x))


def value_and_grad(fn, w):
    """``(fn(w), d fn / d w)`` as NumPy, with the running backend's autodiff."""
    backend = keras.backend.backend()
    if backend == "jax":
        import jax

        value, grad = jax.value_and_grad(lambda a: fn(a))(w)
        return float(value), np.asarray(grad)
    if backend == "torch":
        import torch

        t = torch.tensor(w, requires_grad=True)
        value = fn(t)
        value.backward()
        return float(value.detach()), t.grad.numpy()
    import tensorflow as tf

    v = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = fn(v)
    return float(value), tape.gradient(value, v).numpy()


def penalties():
    """``{f"{regularizer}/{kernel}/value|grad": array}`` on the running backend."""
    out = {}
    for rname, regularizer in regularizers().items():
        for kname, w in kernels().items():
            value, grad = value_and_grad(regularizer, w)
            out[f"{rname}/{kname}/value"] = np.float64(value)
            out[f"{rname}/{kname}/grad"] = grad
    return out


def tensorflow_penalties(tmp_dir):
    """`penalties()` computed on the TensorFlow backend, in a subprocess."""
    path = os.path.join(str(tmp_dir), "tf_penalties.npz")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run(
        [sys.executable, "-m", "tests.helpers.backends", path],
        cwd=REPO, env=env, check=True, timeout=300,
    )
    with np.load(path) as data:
        return dict(data)


def run_python(code, backend, env=None, timeout=600):
    """Runs `code` in a fresh Python process on Keras `backend`; returns its stdout."""
    full_env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="2")
    full_env.update(env or {})
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, env=full_env,
        capture_output=True, text=True, timeout=timeout,
    )
    if result.returncode != 0:
        raise AssertionError(
            f"subprocess on {backend} failed ({result.returncode}):\n"
            f"{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
        )
    return result.stdout


if __name__ == "__main__":
    np.savez(sys.argv[1], **penalties())
