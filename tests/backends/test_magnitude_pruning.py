"""MagnitudePruning under `fit` on the running Keras backend (TensorFlow, JAX, PyTorch).

Every expectation is computed here from the kernels with NumPy: kept counts
``max(1, round(n * (1 - s)))``, the blocks and 2:4 groups of TFLite's
``(outputs, inputs)`` view, the global magnitude ranking.
"""

import keras
import numpy as np
import pytest

import deephoyer_tf

STEPS_PER_EPOCH = 8  # 64 samples, batch 8


def _data(seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(64, 16)).astype("float32"), rng.normal(size=(64, 8)).astype("float32")


def _model(seed=0, units=(24, 8)):
    keras.utils.set_random_seed(seed)
    model = keras.Sequential(
        [keras.Input((16,)), keras.layers.Dense(units[0], activation="relu", name="fc1"),
         keras.layers.Dense(units[1], name="fc2")]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    return model


def _kernels(model):
    return {layer.name: np.array(layer.kernel) for layer in model.layers if hasattr(layer, "kernel")}


def _kept(n, sparsity):
    return max(1, int(round(n * (1 - sparsity))))


class ZeroLog(keras.callbacks.Callback):
    """The zero pattern of every kernel after every batch."""

    def __init__(self):
        super().__init__()
        self.zeros = []

    def on_train_batch_end(self, batch, logs=None):
        if keras.backend.backend() == "jax":
            self.model.jax_state_sync()  # JAX holds the state outside the variables mid-epoch
        self.zeros.append({k: v == 0 for k, v in _kernels(self.model).items()})


def test_exact_sparsity_per_kernel_and_zeros_held_between_updates_and_after_the_end():
    model = _model()
    x, y = _data()
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.8, begin_step=0, end_step=16, frequency=4)
    pruning, log = deephoyer_tf.MagnitudePruning(schedule), ZeroLog()
    model.fit(x, y, batch_size=8, epochs=4, shuffle=False, verbose=0, callbacks=[pruning, log])
    for name, kernel in _kernels(model).items():
        assert np.sum(kernel != 0) == _kept(kernel.size, 0.8), name
    # Each batch end: the zeros of the previous one are still zero (no weight
    # revives); from step 16 on (the last update) the pattern does not change.
    for before, after in zip(log.zeros, log.zeros[1:]):
        for name in before:
            assert np.all(after[name][before[name]]), name
    for name in log.zeros[16]:
        for later in log.zeros[16:]:
            np.testing.assert_array_equal(later[name], log.zeros[16][name])
    assert pruning.applied_step == 16 and pruning.finished
    # Sparsity after each update step t (applied before step t runs, seen at batch end t).
    for step in (0, 4, 8, 12):
        sparsity = schedule.sparsity(step)
        for name, zero in log.zeros[step].items():
            assert np.sum(~zero) == _kept(zero.size, sparsity), (step, name)


def test_global_ranking_keeps_the_largest_weights_of_all_kernels():
    model = _model()
    before = _kernels(model)
    deephoyer_tf.prune_magnitude(model, 0.75, scope="global")
    after = _kernels(model)
    magnitudes = np.concatenate([np.abs(v).ravel() for v in before.values()])
    keep = _kept(magnitudes.size, 0.75)
    threshold = np.sort(magnitudes)[::-1][keep - 1]
    assert sum(int(np.sum(v != 0)) for v in after.values()) == keep
    for name, value in before.items():
        np.testing.assert_array_equal(after[name] != 0, np.abs(value) >= threshold)
    # Per layer the sparsities differ (the kernels have different scales).
    assert len({round(float(np.mean(v == 0)), 3) for v in after.values()}) > 1


def _blocks_of_dense(kernel, cols):
    """(out, in/cols, cols) groups of a Dense kernel (in, out), TFLite's orientation."""
    return kernel.T.reshape(kernel.shape[1], -1, cols)


def test_one_by_four_blocks_along_the_inputs():
    model = _model()
    x, y = _data()
    schedule = deephoyer_tf.ConstantSparsity(0.75, begin_step=0, frequency=4)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0,
              callbacks=[deephoyer_tf.MagnitudePruning(schedule, block_size=(1, 4))])
    for name, kernel in _kernels(model).items():
        blocks = _blocks_of_dense(kernel, 4)
        zero = np.all(blocks == 0, axis=-1)
        assert np.all(np.all(blocks != 0, axis=-1) | zero), name  # each block all zero or all kept
        assert np.sum(~zero) == _kept(zero.size, 0.75), name
    assert deephoyer_tf.pattern_summary(model).pattern == "1x4 blocks"


def test_block_pruning_ranks_blocks_by_mean_magnitude():
    model = _model()
    before = _kernels(model)["fc1"]
    deephoyer_tf.prune_magnitude(model, 0.5, block_size=(1, 4), layer_types="Dense")
    scores = np.abs(_blocks_of_dense(before, 4)).mean(axis=-1).ravel()
    kept = np.any(_blocks_of_dense(_kernels(model)["fc1"], 4) != 0, axis=-1).ravel()
    assert scores[kept].min() >= scores[~kept].max()


def test_two_of_four_on_dense_and_conv_kernels():
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [keras.Input((6, 6, 8)), keras.layers.Conv2D(8, 3, name="conv"), keras.layers.Flatten(),
         keras.layers.Dense(6, name="fc")]
    )
    model.compile(keras.optimizers.Adam(0.01), "mse")
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(32, 6, 6, 8)).astype("f4"), rng.normal(size=(32, 6)).astype("f4")
    schedule = deephoyer_tf.ConstantSparsity(0.5, begin_step=2, frequency=100)
    pruning = deephoyer_tf.MagnitudePruning(schedule, m_by_n=(2, 4))
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning])
    conv, fc = np.array(model.get_layer("conv").kernel), np.array(model.get_layer("fc").kernel)
    # Groups of 4 consecutive inputs for each output (and kernel position).
    conv_groups = np.moveaxis(conv, 2, -1).reshape(-1, 2, 4)  # (kh*kw*out, in/4, 4)
    fc_groups = fc.T.reshape(6, -1, 4)
    for groups in (conv_groups, fc_groups):
        assert np.all(np.sum(groups != 0, axis=-1) == 2)
    assert pruning.sparsity == 0.5
    assert deephoyer_tf.pattern_summary(model).holding["2:4"] == 2


@pytest.mark.slow
@pytest.mark.skipif(keras.backend.backend() == "torch", reason="Keras' PyTorch trainer needs steps_per_execution=1")
@pytest.mark.parametrize("steps_per_execution", [4])
def test_steps_per_execution(steps_per_execution):
    model = _model()
    model.compile(keras.optimizers.Adam(0.01), "mse", steps_per_execution=steps_per_execution)
    x, y = _data()
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.6, begin_step=2, end_step=14, frequency=6)
    pruning = deephoyer_tf.MagnitudePruning(schedule)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[pruning])
    assert int(np.array(model.optimizer.iterations)) == 24
    assert pruning.applied_step == 14 and pruning.finished
    for name, kernel in _kernels(model).items():
        assert np.sum(kernel != 0) == _kept(kernel.size, 0.6), name


def test_final_update_due_at_the_end_of_training_is_applied():
    model = _model()
    x, y = _data()
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.5, begin_step=0, end_step=16, frequency=8)
    pruning = deephoyer_tf.MagnitudePruning(schedule)
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[pruning])  # 16 steps
    assert pruning.applied_step == 16
    for kernel in _kernels(model).values():
        assert np.sum(kernel != 0) == _kept(kernel.size, 0.5)


@pytest.mark.slow
def test_save_load_mid_schedule_and_resume(tmp_path):
    x, y = _data()
    schedule = deephoyer_tf.PolynomialDecay(0.0, 0.9, begin_step=0, end_step=32, frequency=8)
    model = _model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[deephoyer_tf.MagnitudePruning(schedule)])
    mid = _kernels(model)
    for kernel in mid.values():
        # on_train_end applied the update due before step 16
        assert np.sum(kernel != 0) == _kept(kernel.size, schedule.sparsity(16))
    path = tmp_path / "mid.keras"
    deephoyer_tf.strip_zero_masks(model)
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert int(np.array(loaded.optimizer.iterations)) == 16
    log = ZeroLog()
    resumed = deephoyer_tf.MagnitudePruning(schedule)
    loaded.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[resumed, log])
    # The loaded zeros are held from the first resumed step on (step 16 is an update).
    for name, zero in log.zeros[0].items():
        assert np.all(zero[mid[name] == 0]), name
    assert resumed.applied_step == 32
    for name, kernel in _kernels(loaded).items():
        assert np.sum(kernel != 0) == _kept(kernel.size, 0.9), name
        assert np.all(kernel[mid[name] == 0] == 0), name


def test_a_new_callback_resuming_after_the_schedule_keeps_the_pattern():
    x, y = _data()
    schedule = deephoyer_tf.ConstantSparsity(0.7, begin_step=0, end_step=8, frequency=8)
    model = _model()
    model.fit(x, y, batch_size=8, epochs=2, verbose=0, callbacks=[deephoyer_tf.MagnitudePruning(schedule)])
    pattern = {k: v == 0 for k, v in _kernels(model).items()}
    deephoyer_tf.strip_zero_masks(model)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0, callbacks=[deephoyer_tf.MagnitudePruning(schedule)])
    for name, kernel in _kernels(model).items():
        np.testing.assert_array_equal(kernel == 0, pattern[name])


def test_float_schedule_and_argument_errors():
    pruning = deephoyer_tf.MagnitudePruning(0.5, frequency=7)
    assert pruning.schedule == deephoyer_tf.ConstantSparsity(0.5, begin_step=0, frequency=7)
    schedule = deephoyer_tf.ConstantSparsity(0.5, 0)
    with pytest.raises(ValueError, match="Argument `frequency` applies only to a float `schedule`"):
        deephoyer_tf.MagnitudePruning(schedule, frequency=10)
    with pytest.raises(TypeError, match="Invalid type for argument `schedule`.*Received: schedule='x'"):
        deephoyer_tf.MagnitudePruning("x")
    with pytest.raises(ValueError, match="`block_size` and `m_by_n` exclude each other"):
        deephoyer_tf.MagnitudePruning(schedule, block_size=(1, 4), m_by_n=(2, 4))
    with pytest.raises(ValueError, match=r"Expected \(m, n\) with m < n.*Received: m_by_n=\(4, 4\)"):
        deephoyer_tf.MagnitudePruning(schedule, m_by_n=(4, 4))
    with pytest.raises(ValueError, match="Invalid value for argument `scope`"):
        deephoyer_tf.MagnitudePruning(schedule, scope="model")
    with pytest.raises(TypeError, match="Invalid type for argument `block_size`"):
        deephoyer_tf.MagnitudePruning(schedule, block_size=4)


def test_uncompiled_model_and_unsupported_layout_are_named():
    x, y = _data()
    model = _model()
    model.optimizer = None
    pruning = deephoyer_tf.MagnitudePruning(0.5)
    pruning.set_model(model)
    with pytest.raises(ValueError, match="needs a compiled model"):
        pruning.on_train_begin()
    keras.utils.set_random_seed(0)
    depthwise = keras.Sequential([keras.Input((5, 5, 4)), keras.layers.DepthwiseConv2D(3, name="dw")])
    with pytest.raises(ValueError, match="kernel of layer 'dw'.*layout 'depthwise'.*cannot take 1x4 blocks"):
        deephoyer_tf.prune_magnitude(depthwise, 0.5, block_size=(1, 4), layer_types="DepthwiseConv2D")


def test_sparsity_report_shows_the_pattern():
    model = _model()
    assert deephoyer_tf.sparsity_report(model).pattern == "pattern: none (no sparse Dense/Conv kernels)"
    report = deephoyer_tf.prune_magnitude(model, 0.5, m_by_n=(2, 4))
    assert report.pattern == "pattern: 2:4, every group of all 2 sparse kernels"
    assert "Pattern: 2:4, every group of all 2 sparse kernels" in str(report)
    assert report.to_dict()["pattern"] == report.pattern
    deephoyer_tf.prune_magnitude(model, 0.9)  # more zeros: still at least 2 in every 4
    assert deephoyer_tf.sparsity_report(model).pattern.startswith("pattern: 2:4")
    other = _model(seed=1)
    assert deephoyer_tf.prune_magnitude(other, 0.5).pattern.startswith("pattern: unstructured")
