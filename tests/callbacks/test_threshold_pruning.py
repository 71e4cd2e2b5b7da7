"""ThresholdPruning: the three stages in one fit, both flavours; resuming with
BackupAndRestore keeps the zeros without pruning again; MirroredStrategy + XLA."""

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.sparsity import thresholding as pruning
from deephoyer_tf.sparsity import zero_mask as masks
from tests.helpers.strategies import mirrored as mirrored_strategy

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]
X = np.random.default_rng(0).normal(size=(48, 8)).astype("float32")
Y = np.random.default_rng(1).normal(size=(48, 2)).astype("float32")


def make_model(module, strength=1e-2):
    model = module.Sequential(
        [
            module.Input((8,)),
            module.layers.Dense(
                16, activation="tanh", name="fc1",
                kernel_regularizer=deephoyer_tf.HoyerSquare(strength),
            ),
            module.layers.Dense(
                2, name="fc2", kernel_regularizer=deephoyer_tf.HoyerSquare(strength)
            ),
        ]
    )
    rng = np.random.default_rng(2)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    return model


def kernel_arrays(model):
    return [np.asarray(model.get_layer(n).kernel.numpy()) for n in ("fc1", "fc2")]


def recorder(module, model):
    """Records weights at each epoch end, the zeros at each epoch start and
    any held zero that moves after a batch."""

    class Record(module.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.epoch_end, self.epochs, self.moved = {}, [], []
            self.strengths, self.zeros = {}, None

        def on_epoch_begin(self, epoch, logs=None):  # after ThresholdPruning's
            self.epochs.append(epoch)
            self.strengths[epoch] = [
                float(v.numpy()) for v in deephoyer_tf.strength_variables(model)
            ]
            if self.zeros is None and masks.is_fixed(model.get_layer("fc1").kernel):
                self.zeros = [k == 0 for k in kernel_arrays(model)]

        def on_train_batch_end(self, batch, logs=None):
            if self.zeros is not None:
                for k, z in zip(kernel_arrays(model), self.zeros):
                    if np.any(k[z] != 0):
                        self.moved.append((self.epochs[-1], batch))

        def on_epoch_end(self, epoch, logs=None):
            self.epoch_end[epoch] = kernel_arrays(model)

    return Record()


def strength_schedule(module, model):
    """A constant strength schedule: sets the strengths at every epoch start."""

    class Schedule(module.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            for variable in deephoyer_tf.strength_variables(model):
                variable.assign(1e-2)

    return Schedule()


@pytest.mark.parametrize("module", FLAVOURS)
def test_three_stages_in_one_fit(module, capsys):
    model = make_model(module)
    model.compile(optimizer=module.optimizers.Adam(0.02), loss="mse")
    pruner = deephoyer_tf.ThresholdPruning(at_epoch=2, std_ratio=0.5, verbose=1)
    record = recorder(module, model)
    model.fit(
        X, Y, batch_size=16, epochs=4, verbose=0,
        callbacks=[strength_schedule(module, model), pruner, record],
    )

    assert record.strengths[0] == record.strengths[1] == [float(np.float32(1e-2))] * 2
    assert record.strengths[2] == record.strengths[3] == [0.0, 0.0]
    assert pruner.active
    # Pruned from the weights at the end of epoch 1, with the paper's rule.
    for before, zeros in zip(record.epoch_end[1], record.zeros):
        np.testing.assert_array_equal(zeros, np.abs(before) < 0.5 * np.std(before))
        assert 0 < zeros.mean() < 1
    assert record.moved == []
    for kernel, zeros in zip(kernel_arrays(model), record.zeros):
        assert np.all(kernel[zeros] == 0) and np.all(kernel[~zeros] != 0)
    assert pruner.report.nonzero_weights == sum(int((~z).sum()) for z in record.zeros)
    printed = capsys.readouterr().out
    assert "ThresholdPruning: pruned at the start of epoch 3" in printed
    assert str(pruner.report) in printed
    # In place on both flavours, so strip gives the same model back, unmasked.
    assert deephoyer_tf.strip_zero_masks(model) is model
    assert not any(masks.is_fixed(model.get_layer(n).kernel) for n in ("fc1", "fc2"))


def test_resumed_fine_tuning_keeps_its_zeros(tmp_path, monkeypatch):
    backup = str(tmp_path / "backup")

    class Interrupt(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if self.epoch == 2 and batch == 1:
                raise RuntimeError("interrupted")

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

    model = make_model(keras)
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    first = recorder(keras, model)
    with pytest.raises(RuntimeError, match="interrupted"):
        model.fit(
            X, Y, batch_size=16, epochs=4, verbose=0,
            callbacks=[
                keras.callbacks.BackupAndRestore(backup),
                deephoyer_tf.ThresholdPruning(at_epoch=1, std_ratio=0.5, verbose=0),
                first,
                Interrupt(),
            ],
        )
    backed_up = first.epoch_end[1]  # the backup written at the end of epoch 1
    assert first.moved == []

    calls = []
    monkeypatch.setattr(pruning, "prune", lambda *a, **k: calls.append(a))
    model = make_model(keras)  # a fresh process would build a fresh model
    model.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9), loss="mse")
    pruner = deephoyer_tf.ThresholdPruning(at_epoch=1, std_ratio=0.5, verbose=0)
    second = recorder(keras, model)
    model.fit(
        X, Y, batch_size=16, epochs=4, verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(backup), pruner, second],
    )
    assert second.epochs == [2, 3]  # resumed after the backup
    assert calls == []  # not pruned again
    assert pruner.active and second.strengths[2] == [0.0, 0.0]
    for zeros, weights in zip(second.zeros, backed_up):
        np.testing.assert_array_equal(zeros, weights == 0)
    assert second.moved == []
    for kernel, weights in zip(kernel_arrays(model), backed_up):
        np.testing.assert_array_equal(kernel == 0, weights == 0)


# Each separately: Keras 3 fit with both MirroredStrategy over two logical CPUs
# and jit_compile=True fails without any deephoyer_tf code (XLA "tf.Variable on
# a different device", TF 2.21 / Keras 3.15).
@pytest.mark.slow
@pytest.mark.parametrize("mirrored, jit_compile", [(True, False), (False, True)], ids=["mirrored", "jit"])
def test_mirrored_strategy_or_jit_compile(two_cpus, mirrored, jit_compile):
    strategy = mirrored_strategy(two_cpus) if mirrored else tf.distribute.get_strategy()
    with strategy.scope():
        model = make_model(keras)
        model.compile(
            optimizer=keras.optimizers.AdamW(0.02, weight_decay=0.1), loss="mse",
            jit_compile=jit_compile,
        )
    pruner = deephoyer_tf.ThresholdPruning(at_epoch=1, threshold=0.3, verbose=0)

    class PerReplica(keras.callbacks.Callback):
        moved, checked = False, 0

        def on_train_batch_end(self, batch, logs=None):
            if pruner.active:
                for name in ("fc1", "fc2"):
                    kernel = model.get_layer(name).kernel.value
                    mask = masks.mask_of(model.get_layer(name).kernel)
                    # Every device's copy under MirroredStrategy.
                    for replica in getattr(kernel, "values", [kernel]):
                        self.moved |= bool(np.any(replica.numpy()[mask == 0] != 0))
                        self.checked += 1

    check = PerReplica()
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0, callbacks=[pruner, check])
    assert check.checked == 3 * 2 * strategy.num_replicas_in_sync and not check.moved
    assert pruner.report.nonzero_weights < pruner.report.total_weights


@pytest.mark.slow
def test_mnist_three_stages(mnist_dir, capsys):
    """Acceptance: a small MNIST run through fit with ThresholdPruning."""
    from deephoyer_tf.paper.datasets import load_mnist
    from deephoyer_tf.paper.models import lenet_300_100

    data = load_mnist(mnist_dir)
    x, y = data.x_train[:4096], data.y_train[:4096]
    model = lenet_300_100(deephoyer_tf.HoyerSquare(1e-4))
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    pruner = deephoyer_tf.ThresholdPruning(at_epoch=2, std_ratio=0.5, verbose=1)

    class Watch(keras.callbacks.Callback):
        zeros, moved = None, 0

        def on_epoch_begin(self, epoch, logs=None):
            if pruner.active and self.zeros is None:
                self.zeros = [layer.kernel.numpy() == 0 for layer in model.layers if hasattr(layer, "kernel")]

        def on_train_batch_end(self, batch, logs=None):
            if self.zeros is not None:
                kernels = [layer.kernel.numpy() for layer in model.layers if hasattr(layer, "kernel")]
                self.moved += sum(int(np.any(k[z] != 0)) for k, z in zip(kernels, self.zeros))

    watch = Watch()
    model.fit(x, y, batch_size=256, epochs=4, verbose=0, callbacks=[pruner, watch])
    assert watch.zeros is not None and watch.moved == 0
    final = deephoyer_tf.sparsity_report(model)
    assert final.nonzero_weights == pruner.report.nonzero_weights < final.total_weights
    _, accuracy = model.evaluate(data.x_test[:2000], data.y_test[:2000], verbose=0)
    assert accuracy > 0.85
    printed = capsys.readouterr().out
    assert "Structure:" in printed and str(pruner.report) in printed


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"at_epoch": 1.0, "threshold": 0.1}, TypeError, r"Invalid type for argument `at_epoch`\. Expected an int\. Received: at_epoch=1\.0 of type float"),
        ({"at_epoch": True, "threshold": 0.1}, TypeError, r"Received: at_epoch=True of type bool"),
        ({"at_epoch": -1, "threshold": 0.1}, ValueError, r"Invalid value for argument `at_epoch`\. Expected an int >= 0\. Received: at_epoch=-1"),
        ({"at_epoch": 1, "threshold": 0.1, "verbose": 2}, ValueError, r"Invalid value for argument `verbose`\. Expected 0 or 1\. Received: verbose=2"),
        ({"at_epoch": 1}, ValueError, r"Exactly one of the arguments `std_ratio` and `threshold` must be given"),
        ({"at_epoch": 1, "std_ratio": -0.5}, ValueError, r"Invalid value for argument `std_ratio`\. .* Received: std_ratio=-0\.5"),
    ],
)
def test_argument_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        deephoyer_tf.ThresholdPruning(**kwargs)


@pytest.mark.slow
def test_handed_to_another_models_fit_it_prunes_that_model():
    pruner = deephoyer_tf.ThresholdPruning(at_epoch=1, threshold=0.3)
    x = np.random.default_rng(0).normal(size=(32, 6)).astype("float32")
    y = np.zeros((32, 2), "float32")
    for seed in (0, 1):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(4), keras.layers.Dense(2)])
        rng = np.random.default_rng(seed)
        model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
        model.compile(keras.optimizers.SGD(0.0), "mse")
        model.fit(x, y, epochs=2, verbose=0, callbacks=[pruner])
        assert pruner.active and pruner.report.model_name == model.name
        for layer in model.layers:
            assert masks.is_fixed(layer.kernel)
            assert np.all(np.abs(layer.kernel.numpy())[layer.kernel.numpy() != 0] >= 0.3)


def test_biases_and_layer_types_as_in_prune():
    model = keras.Sequential([
        keras.Input((5, 5, 1)), keras.layers.Conv2D(3, 3, name="conv"),
        keras.layers.Flatten(), keras.layers.Dense(4, name="fc"),
    ])
    rng = np.random.default_rng(0)
    model.set_weights([rng.normal(size=w.shape).astype("float32") for w in model.get_weights()])
    conv_before = [w.copy() for w in model.get_layer("conv").get_weights()]
    fc_kernel, fc_bias = [w.copy() for w in model.get_layer("fc").get_weights()]
    pruner = deephoyer_tf.ThresholdPruning(0, threshold=0.5, biases=True, layer_types=["Dense"])
    model.compile(keras.optimizers.SGD(0.0), "mse")
    model.fit(np.zeros((4, 5, 5, 1)), np.zeros((4, 4)), epochs=1, verbose=0, callbacks=[pruner])
    for got, want in zip(model.get_layer("conv").get_weights(), conv_before):
        np.testing.assert_array_equal(got, want)
    assert not masks.is_fixed(model.get_layer("conv").kernel)
    kernel, bias = model.get_layer("fc").get_weights()
    np.testing.assert_array_equal(kernel, np.where(np.abs(fc_kernel) < 0.5, 0, fc_kernel))
    np.testing.assert_array_equal(bias, np.where(np.abs(fc_bias) < 0.5, 0, fc_bias))
    with pytest.raises(TypeError, match=r"Invalid type for argument `biases`\. Expected a bool"):
        deephoyer_tf.ThresholdPruning(0, threshold=0.5, biases=1)
    with pytest.raises(ValueError, match=r"Invalid value for argument `layer_types`.*Received: \['Pool'\]"):
        deephoyer_tf.ThresholdPruning(0, threshold=0.5, layer_types=["Pool"])
