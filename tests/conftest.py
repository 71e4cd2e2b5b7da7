"""Shared test configuration.

* Two logical CPU devices, so `tf.distribute.MirroredStrategy` runs with two
  replicas on a CPU-only machine (must happen before TensorFlow initializes).
* `mnist_dir`: the offline MNIST copy (never the network).
"""

import os
import pathlib

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

if os.environ.get("KERAS_BACKEND") == "torch":
    # Keras on PyTorch first: it imports triton (which PyTorch's wheel
    # brings), and importing triton after TensorFlow crashes the process
    # (TF 2.21, triton 3.8).
    import keras  # noqa: E402, F401

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
try:
    tf.config.set_logical_device_configuration(
        _cpus[0],
        [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()],
    )
except RuntimeError:  # already initialized by another import
    pass

REPO = pathlib.Path(__file__).resolve().parents[1]
MNIST_DIR = pathlib.Path(
    os.environ.get("DEEPHOYER_DATA_DIR", REPO.parent / "shared" / "data" / "mnist")
)


@pytest.fixture(scope="session")
def mnist_dir():
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"MNIST not found at {MNIST_DIR}; set DEEPHOYER_DATA_DIR")
    return str(MNIST_DIR)


@pytest.fixture(scope="session")
def two_cpus():
    """The two logical CPU devices for MirroredStrategy tests."""
    devices = [d.name for d in tf.config.list_logical_devices("CPU")]
    if len(devices) < 2:
        pytest.fail(f"expected two logical CPUs, found {devices}")
    return devices[:2]


@pytest.fixture
def tfmot(monkeypatch):
    """`tensorflow_model_optimization`, imported without leaking its effect.

    Its first import sets ``TF_USE_LEGACY_KERAS=1``; the variable is restored
    after the test.
    """
    monkeypatch.setenv("TF_USE_LEGACY_KERAS", os.environ.get("TF_USE_LEGACY_KERAS", "0"))
    import tensorflow_model_optimization

    return tensorflow_model_optimization


# The backend runs a plain `python -m pytest` leaves out, said in its summary.
_BACKEND_TESTS = "tests/backends tests/internal/test_backend.py"


def _installed(module):
    import importlib.util

    return importlib.util.find_spec(module) is not None  # found, not imported (torch after TF crashes)


def backend_runs_note(backend, installed):
    """The lines on the Keras backends this run did not cover, and the commands that add them."""
    lines = [f"this run used Keras' {backend} backend; the backend-neutral tests ({_BACKEND_TESTS}) "
             "also run on the others, one pytest process each:"]
    for other, package in (("tensorflow", "tensorflow"), ("jax", "jax"), ("torch", "torch")):
        if other == backend:
            continue
        command = f"KERAS_BACKEND={other} python -m pytest {_BACKEND_TESTS}"
        if installed(package):
            lines.append(f"  {other}: skipped here; add it with: {command}")
        else:
            lines.append(f"  {other}: skipped, {package} is not installed; add it with: "
                         f"pip install -e \".[backends]\" && {command}")
    return lines


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    backend = os.environ.get("KERAS_BACKEND", "tensorflow")
    terminalreporter.section("backend runs")
    for line in backend_runs_note(backend, _installed):
        terminalreporter.write_line(line)
    skipped = [r for r in terminalreporter.stats.get("skipped", [])
               if any(name in str(r.longrepr) for name in ("torch", "jax"))]
    if skipped:
        terminalreporter.write_line(f"{len(skipped)} test(s) skipped for a missing backend package "
                                    "(torch or jax): see the skip reasons (pytest -rs)")
