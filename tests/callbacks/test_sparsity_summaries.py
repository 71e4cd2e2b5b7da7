"""SparsitySummaries: event files read back; each value against NumPy at the
same moment; both flavours, MirroredStrategy, batch frequency, nested models."""

import pathlib

import keras
import numpy as np
import pytest
import tensorflow as tf
import tf_keras

import deephoyer_tf
from deephoyer_tf.callbacks import sparsity_summaries as summaries
from tests.helpers.strategies import mirrored as mirrored_strategy

FLAVOURS = [pytest.param(keras, id="keras3"), pytest.param(tf_keras, id="tf_keras")]
X = np.random.default_rng(0).normal(size=(48, 8)).astype("float32")
X[:, 0] = 0.0  # no data gradient for the weights of input 0
Y = np.random.default_rng(1).normal(size=(48, 2)).astype("float32")
HS, L1 = 1e-2, 1e-3
LAYER_TAGS = ("density", "live_inputs", "live_outputs", "hoyer_measure", "penalty")


def make_model(module):
    """fc1 (HoyerSquare) -> fc2 (L1); input 0 and hidden unit 3 nearly dead
    (weights 0.01, which barely move: below 0.05 until pruned)."""
    model = module.Sequential([
        module.Input((8,)),
        module.layers.Dense(6, activation="tanh", name="fc1",
                            kernel_regularizer=deephoyer_tf.HoyerSquare(HS)),
        module.layers.Dense(2, name="fc2", kernel_regularizer=module.regularizers.L1(L1)),
    ])
    rng = np.random.default_rng(2)
    w1 = rng.normal(size=(8, 6)).astype("float32")
    w1[0] = 0.01
    w1[:, 3] = 0.01
    w2 = rng.normal(size=(6, 2)).astype("float32")
    w2[3] = 0.01
    model.set_weights([w1, np.zeros(6, "float32"), w2, np.zeros(2, "float32")])
    return model


def hoyer_measure(w):
    """Eq. 1 in NumPy."""
    w = w.reshape(-1).astype(np.float64)
    root = np.sqrt(w.size)
    return (root - np.abs(w).sum() / np.sqrt((w**2).sum())) / (root - 1)


def expected(model):
    """Every tag's value from the kernels, in NumPy (a two-layer MLP)."""
    w1, w2 = (np.asarray(model.get_layer(n).kernel.numpy()) for n in ("fc1", "fc2"))
    hidden = w1.any(axis=0) & w2.any(axis=1)
    inputs = w1[:, hidden].any(axis=1)
    outputs = w2[hidden].any(axis=0)
    strength = model.get_layer("fc1").kernel_regularizer.strength
    penalties = {
        "fc1": strength * np.abs(w1).sum() ** 2 / (w1**2).sum(),
        "fc2": L1 * np.abs(w2).sum(),
    }
    values = {}
    for name, w, live_in, live_out in (("fc1", w1, inputs, hidden), ("fc2", w2, hidden, outputs)):
        values[f"sparsity/{name}/density"] = np.count_nonzero(w) / w.size
        values[f"sparsity/{name}/live_inputs"] = live_in.sum()
        values[f"sparsity/{name}/live_outputs"] = live_out.sum()
        values[f"sparsity/{name}/hoyer_measure"] = hoyer_measure(w)
        values[f"sparsity/{name}/penalty"] = penalties[name]
    nonzero = np.count_nonzero(w1) + np.count_nonzero(w2)
    values["sparsity/total_density"] = nonzero / (w1.size + w2.size)
    values["sparsity/nonzero_weights"] = nonzero
    values["sparsity/macs"] = inputs.sum() * hidden.sum() + hidden.sum() * outputs.sum()
    values["regularization/total"] = sum(penalties.values())
    return values


def read_events(log_dir):
    """{step: {tag: value}} and {tag: plugin name} from every event file in `log_dir`."""
    steps, plugins = {}, {}
    files = sorted(pathlib.Path(log_dir).glob("events.out.tfevents.*"))
    assert files, f"no event file in {log_dir}"
    for path in files:
        for event in tf.compat.v1.train.summary_iterator(str(path)):
            for value in event.summary.value:
                steps.setdefault(event.step, {})[value.tag] = float(tf.make_ndarray(value.tensor))
                plugins.setdefault(value.tag, value.metadata.plugin_data.plugin_name)
    return steps, plugins


def recorder(module, model, every=None):
    """Records `expected(model)` when SparsitySummaries writes (it runs first)."""

    class Record(module.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.values, self.batches = {}, 0

        def on_epoch_end(self, epoch, logs=None):
            if every is None:
                self.values[epoch] = expected(model)

        def on_train_batch_end(self, batch, logs=None):
            self.batches += 1
            if every is not None and self.batches % every == 0:
                self.values[self.batches] = expected(model)

    return Record()


def check(log_dir, recorded):
    steps, plugins = read_events(log_dir)
    assert sorted(steps) == sorted(recorded)
    for step, want in recorded.items():
        assert sorted(steps[step]) == sorted(want)
        for tag, value in want.items():
            assert steps[step][tag] == pytest.approx(float(value), rel=1e-4, abs=1e-6), (step, tag)
    assert set(plugins.values()) == {"scalars"}  # TensorBoard's scalar dashboard
    return steps


@pytest.mark.parametrize("module", FLAVOURS)
def test_each_epoch_per_layer_values_match_numpy_through_pruning(module, tmp_path):
    model = make_model(module)
    model.compile(optimizer=module.optimizers.SGD(0.05), loss="mse")
    record = recorder(module, model)
    model.fit(X, Y, batch_size=16, epochs=3, verbose=0, callbacks=[
        deephoyer_tf.ThresholdPruning(at_epoch=1, threshold=0.05, verbose=0),
        summaries.SparsitySummaries(tmp_path),
        record,
    ])
    steps = check(tmp_path, record.values)
    expected_tags = {f"sparsity/{n}/{t}" for n in ("fc1", "fc2") for t in LAYER_TAGS}
    assert expected_tags <= set(steps[0])
    # Epoch 0 dense; pruned from epoch 1 on: input 0 and hidden unit 3 dead,
    # the HoyerSquare penalty off (strength 0), the L1 penalty still on.
    assert steps[0]["sparsity/total_density"] == 1.0
    assert steps[2]["sparsity/total_density"] < 1.0
    assert steps[2]["sparsity/fc1/live_inputs"] == 7.0
    assert steps[2]["sparsity/fc1/live_outputs"] == 5.0
    assert steps[0]["sparsity/fc1/penalty"] > 0.0 and steps[2]["sparsity/fc1/penalty"] == 0.0
    assert steps[2]["regularization/total"] == pytest.approx(steps[2]["sparsity/fc2/penalty"])


def test_mirrored_strategy(two_cpus, tmp_path):
    strategy = mirrored_strategy(two_cpus)
    with strategy.scope():
        model = make_model(keras)
        model.compile(optimizer=keras.optimizers.SGD(0.05), loss="mse")
    record = recorder(keras, model)
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0,
              callbacks=[summaries.SparsitySummaries(tmp_path), record])
    steps = check(tmp_path, record.values)
    assert steps[1]["sparsity/fc1/penalty"] > 0.0


@pytest.mark.parametrize("module", FLAVOURS)
def test_update_freq_in_batches(module, tmp_path):
    model = make_model(module)
    model.compile(optimizer=module.optimizers.SGD(0.05), loss="mse")
    record = recorder(module, model, every=2)
    callback = summaries.SparsitySummaries(str(tmp_path), update_freq=2)
    model.fit(X, Y, batch_size=16, epochs=2, verbose=0, callbacks=[callback, record])
    check(tmp_path, record.values)
    assert sorted(record.values) == [2, 4, 6]  # 3 batches an epoch


def test_nested_model_tags_and_write_outside_fit(tmp_path):
    inner = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4, name="fc")], name="block")
    model = keras.Sequential([keras.Input((8,)), inner, keras.layers.Dense(2, name="head")])
    kernel = inner.get_layer("fc").kernel
    w = kernel.numpy()
    w[:, 1] = 0.0
    kernel.assign(w)
    callback = deephoyer_tf.SparsitySummaries(tmp_path)  # exported
    callback.set_model(model)
    written = callback.write(step=7)
    steps, _ = read_events(tmp_path)
    assert steps[7] == pytest.approx(written)
    assert steps[7]["sparsity/block/fc/density"] == pytest.approx(np.count_nonzero(w) / w.size)
    assert steps[7]["sparsity/block/fc/live_outputs"] == 3.0
    assert steps[7]["sparsity/head/live_inputs"] == 3.0
    assert steps[7]["sparsity/head/penalty"] == 0.0 and steps[7]["regularization/total"] == 0.0


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"log_dir": 3}, TypeError,
         r"Invalid type for argument `log_dir`\. Expected a path \(str or os\.PathLike\)\. "
         r"Received: log_dir=3 of type int"),
        ({"log_dir": "logs", "update_freq": "batch"}, TypeError,
         r"Invalid type for argument `update_freq`\. Expected \"epoch\" or an int >= 1\. "
         r"Received: update_freq='batch'"),
        ({"log_dir": "logs", "update_freq": 0}, ValueError,
         r"Expected \"epoch\" or an int >= 1\. Received: update_freq=0"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        summaries.SparsitySummaries(**kwargs)
