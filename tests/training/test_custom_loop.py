"""Distributed training through the three stages: MirroredStrategy equals one
device (both flavours, fit and fit_custom), MultiWorkerMirroredStrategy with two
worker processes, mixed precision."""

import json
import os
import pathlib
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import zero_mask as masks
from tests.helpers.strategies import free_ports
from tests.helpers.strategies import mirrored as mirrored_strategy

HERE = pathlib.Path(__file__).resolve().parent
X = np.random.default_rng(0).normal(size=(64, 8)).astype("float32")
Y = (X @ np.random.default_rng(1).normal(size=(8, 2))).astype("float32")
EPOCHS, AT_EPOCH, BATCH = 4, 2, 16


def make_model(module):
    model = module.Sequential(
        [
            module.Input((8,)),
            module.layers.Dense(
                16, activation="tanh", name="fc1", kernel_regularizer=deephoyer_tf.HoyerSquare(1e-2)
            ),
            module.layers.Dense(2, name="fc2", kernel_regularizer=deephoyer_tf.HoyerSquare(1e-2)),
        ]
    )
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(0, 0.5, w.shape).astype("float32") for w in model.get_weights()])
    return model


def zero_watch(module, model, pruner):
    """Counts batches after pruning at which a held zero is nonzero."""

    class Watch(module.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.moved, self.checked = 0, 0

        def on_train_batch_end(self, batch, logs=None):
            if pruner.active:
                for name in ("fc1", "fc2"):
                    kernel = model.get_layer(name).kernel
                    mask = masks.mask_of(kernel)
                    self.moved += int(np.any(np.asarray(kernel.numpy())[mask == 0] != 0))
                    self.checked += 1

    return Watch()


def train(module, strategy, route="fit"):
    """Regularized training, ThresholdPruning, fine-tuning; (losses, weights, watch)."""
    with strategy.scope():
        model = make_model(module)
        optimizer = module.optimizers.SGD(0.05, momentum=0.5)
    pruner = deephoyer_tf.ThresholdPruning(AT_EPOCH, threshold=0.2, verbose=0)
    watch = zero_watch(module, model, pruner)
    if route == "fit":
        with strategy.scope():
            model.compile(optimizer=optimizer, loss="mse")
        history = model.fit(
            X, Y, batch_size=BATCH, epochs=EPOCHS, shuffle=False, verbose=0,
            callbacks=[pruner, watch],
        )
        losses = history.history["loss"]
    else:
        dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH)
        losses = deephoyer_tf.fit_custom(
            model, dataset, optimizer=optimizer, loss="mse", epochs=EPOCHS,
            strategy=strategy, callbacks=[pruner, watch],
        ).history["loss"]
    assert pruner.active and watch.checked > 0 and watch.moved == 0
    return np.array(losses), model.get_weights(), model


_RUNS = {}


def cached_train(module, route, devices=None):
    """`train` on one device (devices None) or mirrored on `devices`, run once."""
    key = (module.__name__, route, tuple(devices or ()))
    if key not in _RUNS:
        strategy = mirrored_strategy(devices) if devices else tf.distribute.get_strategy()
        losses, weights, _ = train(module, strategy, route)
        _RUNS[key] = losses, weights
    return _RUNS[key]


@pytest.mark.parametrize(
    "module, route",
    [(keras, "fit"), (keras, "fit_custom"), (tf_keras, "fit")],
    ids=["keras3-fit", "keras3-fit_custom", "tf_keras-fit"],
)
@pytest.mark.slow
def test_mirrored_matches_one_device(two_cpus, module, route):
    one_losses, one_weights = cached_train(module, route)
    two_losses, two_weights = cached_train(module, route, two_cpus)
    np.testing.assert_allclose(two_losses, one_losses, rtol=1e-5)
    assert one_losses[-1] < one_losses[0]
    for two, one in zip(two_weights, one_weights):
        np.testing.assert_allclose(two, one, atol=1e-5)
        np.testing.assert_array_equal(two == 0, one == 0)
    assert sum(int(np.sum(w == 0)) for w in one_weights) > 0


def test_fit_custom_matches_fit_one_device():
    """Same loss as Keras fit: data mean + penalties, penalties counted once."""
    fit_losses, fit_weights = cached_train(keras, "fit")
    custom_losses, custom_weights = cached_train(keras, "fit_custom")
    np.testing.assert_allclose(custom_losses, fit_losses, rtol=1e-5)
    for custom, fit in zip(custom_weights, fit_weights):
        np.testing.assert_allclose(custom, fit, atol=1e-5)


@pytest.mark.slow
def test_multi_worker_two_processes(tmp_path):
    """tf_keras fit and Keras 3 fit_custom on MultiWorkerMirroredStrategy."""
    ports = free_ports(2)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in ports]}
    env = dict(os.environ, PYTHONPATH=str(HERE.parents[1]), TF_CPP_MIN_LOG_LEVEL="2")
    env.pop("TF_USE_LEGACY_KERAS", None)
    procs = []
    try:
        for index in range(2):
            env["TF_CONFIG"] = json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}})
            procs.append(
                subprocess.Popen(
                    [sys.executable, str(HERE.parent / "helpers" / "multi_worker.py"), str(tmp_path)],
                    env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                )
            )
        outputs = [proc.communicate(timeout=240)[0] for proc in procs]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-3000:]
    workers = [np.load(tmp_path / f"worker{index}.npz") for index in range(2)]
    for route in ("tf_keras", "keras"):
        for key in [k for k in workers[0].files if k.startswith(f"{route}_kernel")]:
            np.testing.assert_array_equal(workers[0][key], workers[1][key])
        for worker in workers:
            assert worker[f"{route}_zeros"] > 0
            assert not worker[f"{route}_moved"]
            assert worker[f"{route}_loss"][-1] < worker[f"{route}_loss"][0]
    # The Keras 3 custom loop trains exactly like tf_keras fit.
    np.testing.assert_allclose(workers[0]["keras_loss"], workers[0]["tf_keras_loss"], rtol=1e-5)


@pytest.fixture
def mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    tf_keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy("float32")
        tf_keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "module, route",
    [(keras, "fit"), (keras, "fit_custom"), (tf_keras, "fit")],
    ids=["keras3-fit", "keras3-fit_custom", "tf_keras-fit"],
)
def test_mixed_precision_three_stages(mixed_float16, module, route):
    losses, weights, model = train(module, tf.distribute.get_strategy(), route)
    assert model.get_layer("fc1").compute_dtype == "float16"
    assert model.get_layer("fc1").kernel.dtype == "float32"
    assert np.all(np.isfinite(losses)) and losses[-1] < losses[0]
    assert sum(int(np.sum(w == 0)) for w in weights) > 0


def test_fit_custom_resumes_at_initial_epoch_like_fit():
    """Epochs 0-1, then a resumed run from epoch 2, equal one run of epochs 0-3."""
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH)

    def run(splits):
        keras.utils.set_random_seed(0)
        model = make_model(keras)
        optimizer = keras.optimizers.SGD(0.05, momentum=0.9)
        pruner = deephoyer_tf.ThresholdPruning(AT_EPOCH, std_ratio=0.5)
        seen, losses = [], []

        class Epochs(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                seen.append(epoch)

        for start, stop in splits:
            history = deephoyer_tf.fit_custom(
                model, dataset, optimizer=optimizer, loss="mse", epochs=stop,
                initial_epoch=start, callbacks=[pruner, Epochs()],
            )
            assert isinstance(history, keras.callbacks.History)
            assert history.epoch == list(range(start, stop))
            losses += history.history["loss"]
        return seen, np.array(losses), model.get_weights()

    seen_one, losses_one, weights_one = run([(0, EPOCHS)])
    seen_two, losses_two, weights_two = run([(0, AT_EPOCH), (AT_EPOCH, EPOCHS)])
    assert seen_one == seen_two == list(range(EPOCHS))
    np.testing.assert_allclose(losses_two, losses_one, rtol=1e-6)
    for two, one in zip(weights_two, weights_one):
        np.testing.assert_allclose(two, one, atol=1e-6)


def test_fit_custom_errors():
    model = make_model(keras)
    dataset = tf.data.Dataset.from_tensor_slices((X, Y)).batch(BATCH)
    optimizer = keras.optimizers.SGD()
    with pytest.raises(ValueError, match=r"Invalid value for argument `epochs`\. Expected an int >= 1\. Received: epochs=0"):
        deephoyer_tf.fit_custom(model, dataset, optimizer=optimizer, loss="mse", epochs=0)
    with pytest.raises(TypeError, match=r"Invalid type for argument `steps_per_epoch`\. Expected an int\. Received: steps_per_epoch=2\.5 of type float"):
        deephoyer_tf.fit_custom(model, dataset, optimizer=optimizer, loss="mse", steps_per_epoch=2.5)
    with pytest.raises(ValueError, match=r"Invalid value for argument `steps_per_epoch`\. Expected an int >= 1\. Received: steps_per_epoch=0"):
        deephoyer_tf.fit_custom(model, dataset, optimizer=optimizer, loss="mse", steps_per_epoch=0)
    with pytest.raises(ValueError, match=r"Invalid value for argument `initial_epoch`\. Expected an int in \[0, 1\]\. Received: initial_epoch=2"):
        deephoyer_tf.fit_custom(model, dataset, optimizer=optimizer, loss="mse", epochs=2, initial_epoch=2)
    with pytest.raises(TypeError, match=r"Invalid type for argument `model`\. Expected a Keras 3 model .* of type Sequential"):
        deephoyer_tf.fit_custom(make_model(tf_keras), dataset, optimizer=optimizer, loss="mse")
