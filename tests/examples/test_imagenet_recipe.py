"""The ImageNet recipe (examples/imagenet): smoke runs end to end, and its parts.

The end-to-end tests run ``examples/imagenet/train.py --smoke`` as a
subprocess (fake ``imagenet2012`` data from `tfds.testing.mock_data`, nothing
downloaded): ResNet-50 with Group-HS, AlexNet with Hoyer-Square (also
interrupted after its first epoch and resumed from the backup), and two
worker processes of a MultiWorkerMirroredStrategy job on 127.0.0.1. The other
tests check the recipe's own pieces in process: the AlexNet architecture, the
combined DeepHoyer + L2 regularizer, the per-layer pruning rule, and the epoch
shift that lets `fit_custom` resume.
"""

import importlib.util
import json
import os
import pathlib
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

import deephoyer_tf
from tests.helpers.strategies import free_ports

REPO = pathlib.Path(__file__).resolve().parents[2]
RECIPE = REPO / "examples" / "imagenet"
TRAIN = RECIPE / "train.py"
TIMEOUT = 600  # seconds per recipe process: 0.5 to 4 minutes on the shared 2-core machine


def _load(name):
    spec = importlib.util.spec_from_file_location(f"imagenet_{name}", RECIPE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def recipe():
    return {name: _load(name) for name in ("alexnet", "penalties", "custom_loop")}


def _env(**extra):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="", **extra)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), env.get("PYTHONPATH", "")])
    env.pop("TF_USE_LEGACY_KERAS", None)
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run(args, cwd, env=None, expect=0):
    """Runs train.py with `args`; returns its combined output."""
    proc = subprocess.run(
        [sys.executable, str(TRAIN), *args], cwd=cwd, env=env or _env(),
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=TIMEOUT,
    )
    assert proc.returncode == expect, proc.stdout[-4000:]
    return proc.stdout


_TOTAL = re.compile(r"^Total\s+([\d,]+) / ([\d,]+)", re.MULTILINE)


def _totals(output):
    """(nonzero, total) of every sparsity report printed, in order."""
    return [
        (int(a.replace(",", "")), int(b.replace(",", ""))) for a, b in _TOTAL.findall(output)
    ]


def _check_three_stages(output, out_dir):
    """Pruned once, zeros held through fine-tuning, files written."""
    assert output.count("ThresholdPruning: pruned at the start of epoch 2") == 1
    at_pruning, final = _totals(output)[-2:]
    assert 0 < at_pruning[0] < at_pruning[1]
    assert final == at_pruning  # no pruned weight came back, none lost
    results = json.loads((out_dir / "results.json").read_text())
    assert results["report"]["nonzero_weights"] == final[0]
    assert (out_dir / "model.keras").stat().st_size > 0
    assert not (out_dir / "backup").exists()  # deleted after a finished run
    return results


@pytest.mark.slow
def test_smoke_resnet50_group_hs(tmp_path):
    out = tmp_path / "run"
    output = _run(
        ["--model", "resnet50", "--method", "group-hs", "--smoke", "--out", str(out)], tmp_path
    )
    assert "Sparsity report: resnet50" in output
    assert "decay=1e-05" in output  # preset A, the default
    results = _check_three_stages(output, out)
    # Shrunk and exported (or skipped with a note if those parts are missing).
    assert (out / "shrunk.keras").exists() or "shrink: skipped" in output
    assert "tflite_bytes" in results or "export: skipped" in output


@pytest.mark.slow
def test_smoke_alexnet_hs_resumes_after_preemption(tmp_path):
    out = tmp_path / "run"
    args = ["--model", "alexnet", "--method", "hs", "--smoke", "--out", str(out), "--export", "off"]
    first = _run(args + ["--simulate-preemption", "1"], tmp_path, expect=75)
    assert "Epoch 1/2" in first and "Epoch 2/2" not in first
    assert (out / "backup").is_dir()
    second = _run(args, tmp_path)
    assert "resuming from the backup" in second and "epoch 2 of 2" in second
    assert "Epoch 1/2" not in second and "Epoch 2/2" in second
    assert "Sparsity report: alexnet" in second
    assert "decay=1e-06" in second and "weight_decay=0.0001" in second
    _check_three_stages(second, out)
    # the grouped convolutions (conv2/4/5, groups=2) are shrunk, not skipped
    assert "Shrink summary:" in second and (out / "shrunk.keras").exists()


@pytest.mark.slow
def test_smoke_two_workers(tmp_path):
    """Keras 3 on MultiWorkerMirroredStrategy: fit_custom, both workers in step."""
    cluster = {"worker": [f"127.0.0.1:{port}" for port in free_ports(2)]}
    out = tmp_path / "run"
    args = [
        "--model", "alexnet", "--method", "hs", "--smoke", "--strategy", "multi-worker",
        "--out", str(out), "--export", "off",
    ]
    procs, logs = [], []
    try:
        for index in range(2):
            config = {"cluster": cluster, "task": {"type": "worker", "index": index}}
            log = open(tmp_path / f"worker{index}.log", "w+")
            logs.append(log)
            procs.append(subprocess.Popen(
                [sys.executable, str(TRAIN), *args], cwd=tmp_path,
                env=_env(TF_CONFIG=json.dumps(config)), stdout=log, stderr=subprocess.STDOUT,
            ))
        for proc in procs:
            proc.wait(timeout=TIMEOUT)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        outputs = []
        for log in logs:
            log.seek(0)
            outputs.append(log.read())
            log.close()
    for proc, output in zip(procs, outputs):
        assert proc.returncode == 0, output[-4000:]
        assert "replicas=2" in output and "trained with deephoyer_tf.fit_custom" in output
    chief, worker = outputs
    # Same pruning, same final sparsity on both workers (weights in sync).
    assert _totals(chief)[-2:] == _totals(worker)[-2:]
    _check_three_stages(chief, out)
    assert "not the chief worker: no files written" in worker
    assert not [p.name for p in out.iterdir() if p.name.startswith("backup")]  # no copies left


# --- the recipe's pieces, in process ------------------------------------------


@pytest.mark.slow
def test_alexnet_weights_per_layer(recipe):
    model = recipe["alexnet"].alexnet(keras)
    counts = {
        layer.name: int(np.prod(layer.kernel.shape))
        for layer in model.layers if hasattr(layer, "kernel")
    }
    # Krizhevsky et al.'s network with conv2/4/5 in two groups (Caffe's bvlc_alexnet).
    assert counts == {
        "conv1": 11 * 11 * 3 * 96, "conv2": 5 * 5 * 48 * 256, "conv3": 3 * 3 * 256 * 384,
        "conv4": 3 * 3 * 192 * 384, "conv5": 3 * 3 * 192 * 256, "fc6": 6 * 6 * 256 * 4096,
        "fc7": 4096 * 4096, "fc8": 4096 * 1000,
    }
    assert sum(counts.values()) == 60_954_656
    assert model.output_shape == (None, 1000)
    one_tower = recipe["alexnet"].alexnet(keras, 67, groups=1)
    assert one_tower.get_layer("conv2").kernel.shape == (5, 5, 96, 256)
    assert one_tower.get_layer("fc6").kernel.shape == (256, 4096)  # 67 -> 1x1x256
    with pytest.raises(ValueError, match=r"`input_size`. Expected an int >= 67. Received: input_size=66"):
        recipe["alexnet"].alexnet(keras, 66)


def test_with_l2_value_gradient_and_strength(recipe):
    WithL2 = recipe["penalties"].WithL2
    hs = deephoyer_tf.HoyerSquare(1.0)
    reg = WithL2(hs, 0.5)
    w = np.array([3.0, 4.0], np.float32)
    assert float(reg(w)) == pytest.approx(49 / 25 + 0.5 * 25)  # docstring example
    # Switching the DeepHoyer strength off (as ThresholdPruning does) keeps L2.
    assert reg.strength_variables() == hs.strength_variables()
    for variable in deephoyer_tf.strength_variables([keras.layers.Dense(2, kernel_regularizer=reg)]):
        variable.assign(0.0)
    assert float(reg(w)) == pytest.approx(0.5 * 25)
    # l2 = wd / 2 gives the gradient wd * w of coupled SGD weight decay.
    import tensorflow as tf

    x = tf.Variable(w)
    with tf.GradientTape() as tape:
        value = WithL2(deephoyer_tf.HoyerSquare(0.0), 1e-4 / 2)(x)
    np.testing.assert_allclose(tape.gradient(value, x), 1e-4 * w, rtol=1e-6)
    restored = WithL2.from_config(reg.get_config())
    assert type(restored.penalty) is deephoyer_tf.HoyerSquare and restored.l2 == 0.5
    with pytest.raises(TypeError, match=r"`penalty`. Expected a deephoyer_tf.DeepHoyerRegularizer. Received: .* of type L2"):
        WithL2(keras.regularizers.L2(1e-4), 0.5)
    with pytest.raises(ValueError, match=r"`l2`. Expected a finite float >= 0. Received: l2=-1"):
        WithL2(hs, -1)


def test_with_l2_group_layout_shares_strength(recipe):
    WithL2 = recipe["penalties"].WithL2
    reg = WithL2(deephoyer_tf.GroupHoyerSquare(1e-3), 1e-4)
    adapted = reg.with_layout("out_in")
    assert adapted.penalty.layout == "out_in" and adapted.l2 == 1e-4
    assert adapted.strength_variables() == reg.strength_variables()


def _small_model():
    rng = np.random.default_rng(0)
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3, name="conv")(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(4, kernel_regularizer=deephoyer_tf.HoyerSquare(1e-3), name="fc")(x)
    model = keras.Model(inputs, outputs)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            layer.kernel.assign(rng.normal(scale=1e-4, size=layer.kernel.shape))
    return model


def test_layer_rule_pruning_matches_numpy(recipe):
    model = _small_model()
    conv = np.asarray(model.get_layer("conv").kernel.numpy())
    fc = np.asarray(model.get_layer("fc").kernel.numpy())
    thresholds = recipe["penalties"].layer_thresholds(model, 1e-4, fc_std_ratio=0.5)
    assert thresholds == {"conv": 1e-4, "fc": pytest.approx(0.5 * np.std(fc))}
    pruner = recipe["penalties"].LayerRulePruning(1, 1e-4, fc_std_ratio=0.5, verbose=0)
    pruner.set_model(model)
    pruner.on_epoch_begin(0)  # before at_epoch: nothing happens
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(), conv)
    pruner.on_epoch_begin(1)
    np.testing.assert_array_equal(
        model.get_layer("conv").kernel.numpy(), np.where(np.abs(conv) < 1e-4, 0, conv))
    np.testing.assert_array_equal(
        model.get_layer("fc").kernel.numpy(), np.where(np.abs(fc) < 0.5 * np.std(fc), 0, fc))
    assert pruner.active and deephoyer_tf.strength_variables(model)[0].numpy() == 0
    absolute = recipe["penalties"].layer_thresholds(model, 1e-4, fc_threshold=2e-4)
    assert absolute == {"conv": 1e-4, "fc": 2e-4}
    with pytest.raises(ValueError, match="Exactly one of the arguments `fc_std_ratio` and `fc_threshold`"):
        recipe["penalties"].LayerRulePruning(1, 1e-4, fc_std_ratio=0.5, fc_threshold=1e-4)


def test_fit_custom_resumed_past_at_epoch_only_holds_zeros():
    """Resumed at epoch 3 (initial_epoch), a pruner for epoch 2 holds the zeros, no new pruning."""
    import tensorflow as tf

    model = _small_model()
    model.get_layer("fc").kernel.assign(np.zeros((48, 4)))
    before = np.asarray(model.get_layer("conv").kernel.numpy())
    pruner = deephoyer_tf.ThresholdPruning(2, threshold=1.0, verbose=0)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(8, 6, 6, 2)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, rng.integers(0, 4, 8))).batch(8)
    deephoyer_tf.fit_custom(
        model, dataset, optimizer=keras.optimizers.SGD(0.0), epochs=4, initial_epoch=3,
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), callbacks=[pruner],
    )
    assert pruner.active
    np.testing.assert_array_equal(model.get_layer("conv").kernel.numpy(), before)  # not pruned


def test_epoch_checkpoint_restores_weights_optimizer_and_epoch(recipe, tmp_path):
    """The backup of the Keras 3 multi-worker route, on the default strategy."""
    import tensorflow as tf

    loop = recipe["custom_loop"]
    strategy = tf.distribute.get_strategy()
    rng = np.random.default_rng(0)
    x = rng.normal(size=(16, 6, 6, 2)).astype("float32")
    y = rng.integers(0, 4, 16)
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8, drop_remainder=True)

    def make():
        model = _small_model()
        return model, keras.optimizers.SGD(0.01, momentum=0.9)

    model, optimizer = make()
    checkpoint = loop.EpochCheckpoint(str(tmp_path / "backup"), model, optimizer, strategy,
                                      delete_on_end=False)
    optimizer.build(model.trainable_variables)
    assert checkpoint.restore() == 0  # nothing saved yet
    deephoyer_tf.fit_custom(model, dataset, optimizer=optimizer, epochs=2, callbacks=[checkpoint],
                            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    fresh, fresh_optimizer = make()
    restored = loop.EpochCheckpoint(str(tmp_path / "backup"), fresh, fresh_optimizer, strategy)
    fresh_optimizer.build(fresh.trainable_variables)
    assert restored.restore() == 2
    assert int(fresh_optimizer.iterations.numpy()) == int(optimizer.iterations.numpy()) == 4
    for a, b in zip(model.get_weights(), fresh.get_weights()):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(optimizer.variables, fresh_optimizer.variables):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
