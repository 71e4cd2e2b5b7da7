"""Across processes: JAX data parallel equals one device; a model trained on JAX exports
on TF; the MNIST example on this backend.

Each test starts fresh Python processes (the Keras backend and JAX's device
count are fixed at import); each runs in one backend's suite only. Marked slow.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from tests.helpers import backends

BACKEND = keras.backend.backend()

pytest.importorskip("jax")  # the training script below runs on JAX

_TRAIN = r"""
import json, sys
import numpy as np, keras, jax, deephoyer_tf

def run(distribution):
    keras.distribution.set_distribution(distribution)
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((10,)),
        keras.layers.Dense(16, activation="relu", name="fc1",
                           kernel_regularizer=deephoyer_tf.HoyerSquare(1e-2)),
        keras.layers.Dense(4, name="fc2", kernel_regularizer=deephoyer_tf.GroupHoyerSquare(1e-2)),
    ])
    model.compile(keras.optimizers.SGD(0.05, momentum=0.9), "mse")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(128, 10)).astype("float32")
    y = rng.normal(size=(128, 4)).astype("float32")
    history = model.fit(x, y, batch_size=32, epochs=5, shuffle=False, verbose=0, callbacks=[
        deephoyer_tf.StrengthSchedule.linear_warmup(2),
        deephoyer_tf.ThresholdPruning(at_epoch=3, std_ratio=0.5)])
    return model, history.history["loss"]

MODE = sys.argv[1]
if MODE == "parallel":
    assert len(jax.devices()) == 2, jax.devices()
    one, one_loss = run(None)
    two, two_loss = run(keras.distribution.DataParallel(devices=jax.devices()))
    sharding = str(two.get_layer("fc1").kernel.value.sharding)
    print(json.dumps({
        "loss": [one_loss, two_loss], "sharding": sharding,
        "max_diff": max(float(np.max(np.abs(a - b))) for a, b in zip(one.get_weights(), two.get_weights())),
        "same_zeros": all(bool(np.array_equal(a == 0, b == 0)) for a, b in zip(one.get_weights(), two.get_weights())),
        "zeros": [int(np.sum(w == 0)) for w in two.get_weights()[::2]],
    }))
else:
    model, _ = run(None)
    deephoyer_tf.strip_zero_masks(model)
    model.save(sys.argv[2])
    x = np.random.default_rng(1).normal(size=(8, 10)).astype("float32")
    np.save(sys.argv[3], x)
    np.save(sys.argv[4], keras.ops.convert_to_numpy(model(x)))
"""


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "jax", reason="runs in the JAX suite")
def test_data_parallel_on_two_host_devices_equals_one_device():
    out = backends.run_python(
        "import sys; sys.argv = ['x', 'parallel']\n" + _TRAIN, "jax",
        env={"XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
    )
    result = json.loads(out.strip().splitlines()[-1])
    one, two = result["loss"]
    np.testing.assert_allclose(two, one, rtol=1e-5)
    assert "NamedSharding" in result["sharding"]  # the kernels do live on the two-device mesh
    assert result["max_diff"] < 1e-5 and result["same_zeros"]
    assert all(z > 0 for z in result["zeros"])


@pytest.mark.slow
@pytest.mark.skipif(BACKEND != "tensorflow", reason="runs in the TensorFlow suite")
def test_a_model_trained_on_jax_exports_to_tflite_on_tensorflow(tmp_path):
    model_path, x_path, y_path = (str(tmp_path / n) for n in ("m.keras", "x.npy", "y.npy"))
    code = f"import sys; sys.argv = ['x', 'save', {model_path!r}, {x_path!r}, {y_path!r}]\n" + _TRAIN
    backends.run_python(code, "jax")
    out = str(tmp_path / "m.tflite")
    env = dict(os.environ, KERAS_BACKEND="tensorflow", TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, "-m", "deephoyer_tf.cli", "export", model_path, out],
        cwd=backends.REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "check: max abs error" in result.stdout and f"{out}: " in result.stdout, result.stdout
    from deephoyer_tf.export import runtime

    x, y = np.load(x_path), np.load(y_path)
    with open(out, "rb") as f:
        content = f.read()
    got = runtime.run(content, x, runtime.auto_op_resolver(content))
    np.testing.assert_allclose(got, y, atol=1e-5)


@pytest.mark.slow
@pytest.mark.skipif(BACKEND == "tensorflow", reason="tests/examples runs it on TensorFlow")
def test_mnist_three_stages_example_holds_its_zeros_on_this_backend(mnist_dir):
    script = os.path.join(backends.REPO, "examples", "mnist_three_stages.py")
    env = dict(os.environ, KERAS_BACKEND=BACKEND, TF_CPP_MIN_LOG_LEVEL="2")
    result = subprocess.run(
        [sys.executable, script, "--quick", "--data-dir", mnist_dir],
        cwd=backends.REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "zeros held exactly through fine-tuning: True" in result.stdout
    assert "Sparsity report" in result.stdout and "fc1" in result.stdout
