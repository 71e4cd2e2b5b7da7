"""Training on the running Keras backend: strengths that change, zeros that stay zero.

Run under each backend (``KERAS_BACKEND=jax python -m pytest tests/backends``).
On JAX `fit` compiles its step as a function of the model's state: these
tests check, by the loss it produces and the weights it leaves, that what
deephoyer_tf changes between steps takes effect there.
"""

import warnings

import keras
import numpy as np
import pytest

import deephoyer_tf
from deephoyer_tf._internal import backend
from tests.helpers.hoyer_numpy import np_hoyer_square

BACKEND = keras.backend.backend()


def _data(n=64, features=6, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, features)).astype("float32")
    return x, rng.normal(size=(n, 3)).astype("float32")


def _model(regularizer, seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(8, activation="relu", kernel_regularizer=regularizer, name="fc1"),
            keras.layers.Dense(3, kernel_regularizer=regularizer, name="fc2"),
        ]
    )


def _penalty(model, strength):
    return strength * sum(np_hoyer_square(model.get_layer(n).kernel.numpy()) for n in ("fc1", "fc2"))


def test_strength_schedule_changes_the_loss():
    # lr 0: the weights stay put, so each epoch's loss is L0 + factor * penalty.
    strength = 0.05
    model = _model(deephoyer_tf.HoyerSquare(strength))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = _data()
    factors = [1.0, 0.0, 3.0, 0.5]
    history = model.fit(
        x, y, batch_size=16, epochs=len(factors), shuffle=False, verbose=0,
        callbacks=[deephoyer_tf.StrengthSchedule(lambda epoch: factors[epoch])],
    )
    loss = np.array(history.history["loss"])
    penalty = _penalty(model, strength)
    np.testing.assert_allclose(loss - loss[1], np.array(factors) * penalty, rtol=1e-4, atol=1e-6)


def test_assigned_strength_takes_effect_in_the_next_fit():
    strength = 0.05
    model = _model(deephoyer_tf.HoyerSquare(strength))
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = _data()
    first = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    # The step was compiled already (on JAX, with the strength outside the model's state).
    for variable in deephoyer_tf.strength_variables(model):
        variable.assign(0.0)
    second = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    assert first - second == pytest.approx(_penalty(model, strength), rel=1e-4)
    # and the strength is state, not a weight: weights and saved files unchanged
    assert len(model.get_weights()) == 4


OPTIMIZERS = {
    "sgd_momentum": lambda: keras.optimizers.SGD(0.005, momentum=0.9),
    "adam": lambda: keras.optimizers.Adam(0.01),
    "adamw": lambda: keras.optimizers.AdamW(0.01, weight_decay=0.5),
}


class _ZerosAfterEveryStep(keras.callbacks.Callback):
    """Records, after every batch, whether each held zero is still exactly zero."""

    def __init__(self, zeros):
        super().__init__()
        self.zeros = zeros
        self.steps = 0
        self.moved_free = False
        self.start = None

    def on_train_batch_end(self, batch, logs=None):
        model = self.model  # on JAX, this syncs the state from the compiled step
        self.steps += 1
        for name, zero in self.zeros.items():
            kernel = model.get_layer(name).kernel.numpy()
            assert np.all(kernel[zero] == 0.0), f"{name}: a held zero moved at step {self.steps}"
            if self.start is not None and np.any(kernel[~zero] != self.start[name][~zero]):
                self.moved_free = True


@pytest.mark.parametrize("optimizer", sorted(OPTIMIZERS))
def test_zeros_exactly_zero_after_every_optimizer_step(optimizer):
    model = _model(deephoyer_tf.HoyerSquare(1e-3))
    x, y = _data()
    deephoyer_tf.prune(model, std_ratio=0.6)
    deephoyer_tf.fix_zeros(model)
    zeros = {n: model.get_layer(n).kernel.numpy() == 0 for n in ("fc1", "fc2")}
    assert all(z.any() for z in zeros.values())
    model.compile(OPTIMIZERS[optimizer](), "mse")
    check = _ZerosAfterEveryStep(zeros)
    check.start = {n: model.get_layer(n).kernel.numpy() for n in zeros}
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[check])
    assert check.steps == 8 and check.moved_free
    deephoyer_tf.strip_zero_masks(model)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # released: zeros may move now
    assert any(np.any(model.get_layer(n).kernel.numpy()[z] != 0) for n, z in zeros.items())


class _ZerosAtEpoch(keras.callbacks.Callback):
    """Records the zero pattern of the kernels at the start of epoch `epoch`."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch
        self.zeros = None

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            self.zeros = {n: self.model.get_layer(n).kernel.numpy() == 0 for n in ("fc1", "fc2")}


def test_threshold_pruning_prunes_switches_off_and_holds():
    model = _model(deephoyer_tf.GroupHoyerSquare(0.05))
    model.compile(keras.optimizers.Adam(0.01), "mse")
    x, y = _data()
    pruning, pruned = deephoyer_tf.ThresholdPruning(at_epoch=2, std_ratio=0.5), _ZerosAtEpoch(2)
    model.fit(x, y, batch_size=16, epochs=5, verbose=0, callbacks=[pruning, pruned])
    assert pruning.active
    assert all(float(v.numpy()) == 0.0 for v in deephoyer_tf.strength_variables(model))
    for name, zeros in pruned.zeros.items():
        assert zeros.any()
        assert np.all(model.get_layer(name).kernel.numpy()[zeros] == 0.0)
    # penalties off: evaluate's loss is the data loss alone
    mse = float(np.mean((keras.ops.convert_to_numpy(model(x)) - y) ** 2))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse, rel=1e-4)


def test_prune_on_a_fixed_model_holds_the_new_zeros():
    model = _model(None)
    x, y = _data()
    deephoyer_tf.prune(model, std_ratio=0.2)
    deephoyer_tf.fix_zeros(model)
    model.compile(keras.optimizers.Adam(0.01), "mse")
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # step compiled with the first masks
    deephoyer_tf.prune(model, std_ratio=0.8)
    zeros = model.get_layer("fc1").kernel.numpy() == 0
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    assert np.all(model.get_layer("fc1").kernel.numpy()[zeros] == 0.0)


def test_shrink_and_report_on_this_backend():
    model = _model(None)
    x, _ = _data()
    kernel = model.get_layer("fc1").kernel.numpy()
    kernel[:, :3] = 0.0
    model.get_layer("fc1").kernel.assign(kernel)
    report = deephoyer_tf.sparsity_report(model)
    assert report.layers[0].live_outputs == 5
    small = deephoyer_tf.shrink(model)
    assert small.get_layer("fc1").kernel.shape == (6, 5)
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(small(x)), keras.ops.convert_to_numpy(model(x)), atol=1e-5
    )


def test_regularized_model_saves_and_loads(tmp_path):
    model = _model(deephoyer_tf.GroupHoyerSquare(1e-3, input_strength=2e-3))
    deephoyer_tf.strength_variables(model)  # tracked as state on JAX: still not saved
    path = str(tmp_path / "m.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    regularizer = loaded.get_layer("fc1").kernel_regularizer
    assert isinstance(regularizer, deephoyer_tf.GroupHoyerSquare)
    assert regularizer.input_strength == pytest.approx(2e-3)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_array_equal(a, b)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="the TensorFlow-only parts work on TensorFlow")
def test_tensorflow_only_parts_raise_a_clear_error(tmp_path):
    model = _model(None)
    expected = (
        rf"needs the TensorFlow backend of Keras, but Keras runs on the '{BACKEND}' backend "
        r"here \(KERAS_BACKEND=" + BACKEND + r"\)"
    )
    with pytest.raises(backend.BackendError, match=r"export_tflite .*" + expected + ".*deephoyer-tf export"):
        deephoyer_tf.export_tflite(model, str(tmp_path / "m.tflite"))
    with pytest.raises(backend.BackendError, match=r"fit_custom .*" + expected + ".*keras.distribution"):
        deephoyer_tf.fit_custom(model, None, optimizer="sgd", loss="mse")
    with pytest.raises(backend.BackendError, match=r"SparsitySummaries .*" + expected + ".*scalars"):
        deephoyer_tf.SparsitySummaries(str(tmp_path / "logs"))
    with pytest.raises(backend.BackendError, match=r"fix_zeros_tfmot .*" + expected):
        deephoyer_tf.fix_zeros_tfmot(model)


@pytest.mark.skipif(BACKEND == "tensorflow", reason="tf_keras models work on TensorFlow")
def test_a_tf_keras_model_raises_a_clear_error():
    import tf_keras

    model = tf_keras.Sequential([tf_keras.Input((4,)), tf_keras.layers.Dense(2, name="d")])
    with pytest.raises(backend.BackendError, match=r"tf_keras \(Keras 2\) model .* KERAS_BACKEND=tensorflow"):
        deephoyer_tf.prune(model, threshold=0.1)


@pytest.mark.skipif(BACKEND != "jax", reason="only JAX freezes untracked variables into its step")
def test_setting_a_frozen_strength_warns_on_jax_and_tracking_fixes_it():
    strength = 0.05
    hs = deephoyer_tf.HoyerSquare(strength)
    model = _model(hs)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    x, y = _data()
    hs.strength = strength  # before any step was compiled: no warning
    first = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    with pytest.warns(RuntimeWarning, match=r"HoyerSquare.strength was set on the JAX backend .* deephoyer_tf.strength_variables\(model\) once"):
        hs.strength = 0.0
    deephoyer_tf.strength_variables(model)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hs.strength = 0.0
    second = model.fit(x, y, batch_size=16, epochs=1, verbose=0).history["loss"][0]
    assert first - second == pytest.approx(_penalty(model, strength), rel=1e-4)


def test_regularize_copies_with_penalties_equal_to_numpy():
    from tests.helpers.hoyer_numpy import np_group_hs

    dense = _model(None)
    model = deephoyer_tf.regularize(dense, deephoyer_tf.GroupHoyerSquare(1e-2))
    x, y = _data()
    expected = sum(1e-2 * np_group_hs(model.get_layer(n).kernel.numpy(), "both") for n in ("fc1", "fc2"))
    model(x)
    total = sum(float(keras.ops.convert_to_numpy(loss)) for loss in model.losses)
    assert total == pytest.approx(expected, rel=1e-5)
    model.compile(keras.optimizers.SGD(0.0), "mse")
    mse = float(np.mean((keras.ops.convert_to_numpy(model(x)) - y) ** 2))
    assert model.evaluate(x, y, verbose=0) == pytest.approx(mse + expected, rel=1e-4)
