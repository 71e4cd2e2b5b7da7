"""`search.run`: the Optuna study, its storage, the Pareto front, the choice, interrupted trials."""

import json
import os
import subprocess
import sys
import textwrap
import time

import keras
import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from deephoyer_tf import search  # noqa: E402
from deephoyer_tf.search import study as study_lib  # noqa: E402

SCHEDULE = search.Schedule(regularize_epochs=2, finetune_epochs=1, warmup_epochs=1, batch_size=32)


def build_model():
    return keras.Sequential([
        keras.Input((8,)),
        keras.layers.Dense(16, activation="relu", name="h"),
        keras.layers.Dense(3, name="out"),
    ])


def blobs(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    centers = np.random.default_rng(99).normal(size=(3, 8)) * 3
    return (centers[y] + rng.normal(size=(n, 8))).astype("float32"), y


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A dense model trained once for the module (a path, as `dense_model` takes it)."""
    keras.utils.set_random_seed(0)
    model = build_model()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*blobs(256, 0), epochs=3, verbose=0)
    path = tmp_path_factory.mktemp("dense") / "dense.keras"
    model.save(path)
    return str(path)


def _run(tmp_path, n_trials, dense=None, **kwargs):
    kwargs.setdefault("storage", f"sqlite:///{tmp_path / 's.db'}")
    kwargs.setdefault("schedule", SCHEDULE)
    kwargs.setdefault("log", lambda *a: None)
    return search.run(build_model, blobs(256, 0), blobs(128, 1), method="hs", n_trials=n_trials,
                      output=tmp_path / "out", study_name="t", pretrain_epochs=3, max_drop=2.0,
                      dense_model=dense, **kwargs)


@pytest.mark.slow
def test_a_study_continues_from_its_storage_and_writes_every_trial(tmp_path):
    first = _run(tmp_path, 2)
    second = _run(tmp_path, 1)  # same storage and name: continues
    summary = json.loads((tmp_path / "out" / "search.json").read_text())
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2]
    assert len(first.trials) == 2 and len(second.trials) == 3
    assert (tmp_path / "out" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # the dense model was trained once and reused; its accuracy is the study's reference
    assert second.dense_validation_accuracy == first.dense_validation_accuracy
    assert summary["dense_validation_accuracy"] == first.dense_validation_accuracy
    complete = [t for t in summary["trials"] if t["state"] == "COMPLETE"]
    for t in complete:
        assert set(t["params"]) == {"strength", "std_ratio"}
        model = keras.models.load_model(t["model_path"])
        kernels = [layer.kernel.numpy() for layer in model.layers]
        assert t["nonzero_weights"] == sum(int(np.count_nonzero(k)) for k in kernels)
        assert t["size"] == t["nonzero_weights"]  # hs: size is nonzero weights
        assert t["feasible"] == (t["drop_points"] <= 2.0)
    # the constraint Optuna's sampler reads is the one reported
    for frozen in second.study.trials:
        if frozen.state.name == "COMPLETE":
            drop = summary["dense_validation_accuracy"] - frozen.user_attrs["validation_accuracy"]
            assert frozen.constraints == {"accuracy_drop": pytest.approx(drop - 0.02)}
    # a resumed study draws new parameters, not the first run's again
    params = [tuple(sorted(t["params"].items())) for t in summary["trials"]]
    assert len(set(params)) == 3


def test_pareto_front_and_choice_against_brute_force():
    rng = np.random.default_rng(0)
    records = []
    for number in range(40):
        size, accuracy = int(rng.integers(10, 30)), float(rng.choice([0.9, 0.91, 0.92, 0.93]))
        state = "COMPLETE" if number % 7 else "PRUNED"
        records.append({"number": number, "state": state, "size": size if state == "COMPLETE" else None,
                        "validation_accuracy": accuracy, "feasible": accuracy >= 0.92})
    done = [r for r in records if r["state"] == "COMPLETE"]
    expected = {r["number"] for r in done if not any(
        (o["size"], -o["validation_accuracy"]) != (r["size"], -r["validation_accuracy"])
        and o["size"] <= r["size"] and o["validation_accuracy"] >= r["validation_accuracy"] for o in done)}
    front = study_lib.pareto_front(records)
    assert set(front) == expected
    sizes = [next(r["size"] for r in records if r["number"] == n) for n in front]
    assert sizes == sorted(sizes)
    chosen = study_lib.choose(records)
    feasible = [r for r in done if r["feasible"]]
    assert chosen["size"] == min(r["size"] for r in feasible)
    assert chosen["validation_accuracy"] == max(r["validation_accuracy"] for r in feasible
                                                if r["size"] == chosen["size"])
    assert study_lib.choose([dict(r, feasible=False) for r in records]) is None


class _FailAt(keras.callbacks.Callback):
    """Raises at the end of epoch `epoch` of the first fit it sees; records the epochs it sees."""

    def __init__(self, epoch=None):
        super().__init__()
        self.epoch, self.seen = epoch, []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            self.epoch = None
            raise RuntimeError("interrupted")


@pytest.mark.slow
def test_a_trial_interrupted_mid_training_is_retried_from_its_last_epoch(tmp_path, dense):
    schedule = search.Schedule(regularize_epochs=4, finetune_epochs=1, warmup_epochs=1, batch_size=32)
    failing = _FailAt(epoch=1)
    with pytest.raises(RuntimeError, match="interrupted"):
        _run(tmp_path, 1, dense, schedule=schedule, callbacks=[failing])
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state.name for t in stored.trials] == ["FAIL"]
    assert failing.seen == [0, 1]
    watching = _FailAt()
    result = _run(tmp_path, 1, dense, schedule=schedule, callbacks=[watching])
    states = [(t["number"], t["state"], t["retry_of"]) for t in result.trials]
    assert states == [(0, "FAIL", None), (1, "COMPLETE", 0)]
    assert result.trials[1]["params"] == result.trials[0]["params"]
    # resumed after the two epochs done (regularize 2..3), then the fine-tuning epoch
    assert watching.seen == [2, 3, 0]
    assert not (tmp_path / "out" / "backups").exists() or not any((tmp_path / "out" / "backups").iterdir())
    # a second resume does not retry the trial again
    again = _run(tmp_path, 1, dense, pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    assert [t["retry_of"] for t in again.trials] == [None, 0, None]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_process_killed_mid_trial_leaves_a_running_trial_that_the_next_run_retries(tmp_path):
    """SIGKILL (no cleanup at all): the trial stays RUNNING; its stale heartbeat fails and retries it."""
    script = textwrap.dedent(f"""
        import os, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r} + "/../..")
        import keras
        from tests.search import test_study as t

        class Kill(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                os.kill(os.getpid(), signal.SIGKILL)

        import pathlib
        t._run(pathlib.Path({str(tmp_path)!r}), 1, callbacks=[Kill()], heartbeat_interval=1, grace_period=2)
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state.name for t in stored.trials] == ["RUNNING"]
    # As if the process had run on another machine: only its heartbeat can tell it is gone
    # (on this host, the dead owner process is detected at once: test_storage.py).
    stored._storage.set_trial_user_attr(stored.trials[0]._trial_id, "owner_host", "another-machine")
    time.sleep(3)  # the heartbeat is now older than the grace period
    result = _run(tmp_path, 1, heartbeat_interval=1, grace_period=2)
    assert [t["state"] for t in result.trials] == ["FAIL", "COMPLETE"]
    assert result.trials[1]["params"] == result.trials[0]["params"]
    retried = optuna.storages.RetryHeartbeatStaleTrialCallback.retried_trial_number(result.study.trials[1])
    assert retried == 0


@pytest.mark.slow
def test_the_chosen_model_loads_and_its_size_is_the_smallest_feasible(tmp_path):
    result = _run(tmp_path, 3, enqueue=[{"strength": 1e-3, "std_ratio": 0.5}])
    assert result.trials[0]["params"] == {"strength": 1e-3, "std_ratio": 0.5}
    feasible = [t for t in result.trials if t["feasible"] and t["state"] == "COMPLETE"]
    assert feasible, result.trials
    assert result.chosen["size"] == min(t["size"] for t in feasible)
    model = result.load_model()
    assert sum(int(np.count_nonzero(w)) for w in (layer.kernel.numpy() for layer in model.layers)) == \
        result.chosen["nonzero_weights"]
    assert set(result.pareto) <= {t["number"] for t in result.trials if t["state"] == "COMPLETE"}


@pytest.mark.slow
def test_per_layer_ratios_and_group_methods_count_macs(tmp_path, dense):
    result = search.run(build_model, blobs(256, 0), blobs(128, 1), method="group-lasso", n_trials=1,
                        output=tmp_path / "out", per_layer=True, dense_model=dense, schedule=SCHEDULE,
                        log=lambda *a: None)
    trial = result.trials[0]
    assert set(trial["params"]) == {"strength", "std_ratio:h", "std_ratio:out"}
    assert result.size_metric == "macs" and trial["size"] == trial["macs"]
    assert (tmp_path / "out" / "study.db").exists()  # the default storage


def test_each_epoch_reports_the_validation_error_to_the_pruner(tmp_path, dense):
    # ThresholdPruner(lower=2) prunes every reported error (errors are <= 1): stopped after epoch 0
    result = _run(tmp_path, 1, dense, pruner=optuna.pruners.ThresholdPruner(lower=2.0))
    trial, frozen = result.trials[0], result.study.trials[0]
    assert trial["state"] == "PRUNED" and trial["pruned_at_epoch"] == 0
    assert list(frozen.intermediate_values) == [0]
    assert frozen.intermediate_values[0] == pytest.approx(1.0 - frozen.user_attrs["pruned_validation_accuracy"])
    assert result.chosen is None and result.pareto == []
    assert not list((tmp_path / "out").glob("backups/*"))  # a pruned trial leaves no backup behind


@pytest.mark.slow
def test_datasets_work_like_arrays(tmp_path):
    import tensorflow as tf

    def ds(n, seed):
        return tf.data.Dataset.from_tensor_slices(blobs(n, seed)).batch(32)

    result = search.run(build_model, ds(256, 0), ds(128, 1), method="l1", n_trials=1,
                        output=tmp_path / "out", pretrain_epochs=2, schedule=SCHEDULE, log=lambda *a: None)
    x, y = blobs(128, 1)
    model = result.load_model(0)
    expected = float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))
    assert result.trials[0]["validation_accuracy"] == pytest.approx(expected)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(method="l0"), ValueError, r"^Invalid value for argument `method`\. Expected one of \['hs'"),
    (dict(n_trials=0), ValueError, r"n_trials"),
    (dict(strength_range=(1e-3, 1e-5)), ValueError, r"^Invalid value for argument `strength_range`"),
    (dict(train=[1, 2, 3]), TypeError, r"^Invalid type for argument `train`\. Expected a pair \(x, y\)"),
])
def test_bad_arguments_are_rejected_clearly(tmp_path, kwargs, error, message):
    args = dict(method="hs", n_trials=1, train=blobs(32, 0))
    args.update(kwargs)
    train = args.pop("train")
    with pytest.raises(error, match=message):
        search.run(build_model, train, blobs(16, 1), output=tmp_path, log=lambda *a: None, **args)


@pytest.mark.slow
def test_a_study_of_another_method_is_not_continued(tmp_path, dense):
    _run(tmp_path, 1, dense, pruner=optuna.pruners.ThresholdPruner(lower=2.0))  # one short trial
    with pytest.raises(ValueError, match=r"Study 't' in sqlite:///.* searches 'hs'\. Received: method='l1'"):
        search.run(build_model, blobs(256, 0), blobs(128, 1), method="l1", n_trials=1,
                   output=tmp_path / "out", study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}",
                   schedule=SCHEDULE, dense_model=dense, log=lambda *a: None)


@pytest.mark.slow
def test_importing_the_package_imports_neither_optuna_nor_the_search():
    code = ("import sys, deephoyer_tf; print('optuna' in sys.modules, 'deephoyer_tf.search' in sys.modules);"
            "deephoyer_tf.search; print('deephoyer_tf.search' in sys.modules, 'optuna' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}).stdout.split()
    assert out == ["False", "False", "True", "False"]


@pytest.mark.slow
def test_magnitude_method_prunes_on_keras_3_to_the_suggested_sparsity(tmp_path, dense):
    """``magnitude`` is MagnitudePruning on Keras 3 (no tf_keras builder needed): exact target."""
    result = search.run(build_model, blobs(256, 0), blobs(128, 1), method="magnitude", n_trials=1,
                        output=tmp_path / "out", dense_model=dense, schedule=SCHEDULE,
                        log=lambda *a: None, enqueue=[{"target_sparsity": 0.875}])
    trial = result.trials[0]
    assert trial["params"] == {"target_sparsity": 0.875}
    # 8*16 and 16*3 kernels at 87.5%: round(n * 0.125) kept each
    assert trial["size"] == round(128 * 0.125) + round(48 * 0.125)
