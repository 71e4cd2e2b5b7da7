"""The study's storage: bad URLs and damaged files named before any training; killed trials retried at once.

Before: a ``bogus://`` URL, a SQLite file in a missing folder and a truncated
``study.db`` gave SQLAlchemy tracebacks not naming the path, after the dense
model was trained; a search killed and rerun within the heartbeat grace period
ended with ``{'COMPLETE': 1, 'RUNNING': 1}``.
"""

import os
import subprocess
import sys
import textwrap

import pytest

optuna = pytest.importorskip("optuna")

from deephoyer_tf import search  # noqa: E402
from deephoyer_tf.search import storage as storage_lib  # noqa: E402
from tests.search import test_study  # noqa: E402


def _good_db(path):
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="x")
    study.optimize(lambda t: t.suggest_float("a", 0, 1), n_trials=3)
    return path.read_bytes()


def _damaged(tmp_path, kind):
    if kind == "bogus":
        return "bogus://", "Expected a SQLAlchemy database URL such as sqlite:///search.db or " \
            "postgresql://user@host/db. Received: storage='bogus://' (NoSuchModuleError: Can't load plugin: " \
            "sqlalchemy.dialects:bogus)"
    if kind == "missing-folder":
        url = f"sqlite:///{tmp_path / 'nowhere' / 'study.db'}"
        return url, f"Expected a SQLite file in an existing folder. Received: storage={url!r} " \
            f"(the folder {str(tmp_path / 'nowhere')!r} does not exist)"
    data = _good_db(tmp_path / "good.db")
    path = tmp_path / "study.db"
    url = f"sqlite:///{path}"
    if kind == "truncated":
        path.write_bytes(data[: len(data) // 3])
        return url, f"Expected an Optuna storage that can be opened and read. Received: storage={url!r} " \
            "(DatabaseError: (sqlite3.DatabaseError) database disk image is malformed)"
    path.write_bytes(os.urandom(4096))
    return url, f"Expected a SQLite database file (an Optuna study). Received: storage={url!r} " \
        f"({str(path)!r} is not a SQLite database: truncated or another kind of file)"


@pytest.mark.parametrize("kind", ["bogus", "missing-folder", "truncated", "random-bytes"])
def test_bad_storage_is_a_value_error_naming_it_before_any_training(tmp_path, kind):
    url, message = _damaged(tmp_path, kind)
    trained = []

    def build_model():
        trained.append(1)
        return test_study.build_model()

    with pytest.raises(ValueError) as error:
        search.run(build_model, test_study.blobs(64, 0), test_study.blobs(32, 1), method="hs", n_trials=1,
                   output=tmp_path / "out", storage=url, log=lambda *a: None)
    assert str(error.value) == f"Invalid value for argument `storage`. {message}"
    assert error.value.__cause__ is None  # no SQLAlchemy traceback chained
    assert trained == [] and not (tmp_path / "out" / "dense.keras").exists()


def test_a_good_storage_opens():
    storage = storage_lib.open_storage("sqlite:///:memory:", 30, 60, 2)
    assert storage.get_all_studies() == []


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize")
def test_only_running_trials_of_dead_processes_of_this_host_are_failed(tmp_path):
    storage = storage_lib.open_storage(f"sqlite:///{tmp_path / 's.db'}", 30, 60, 2)
    study = optuna.create_study(storage=storage, study_name="s")
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    owners = [("dead", int(dead), None), ("alive", os.getppid(), storage_lib._process_start(os.getppid())),
              ("reused", os.getppid(), 1), ("elsewhere", int(dead), None), ("unowned", None, None)]
    for name, pid, started in owners:
        trial = study.ask()
        trial.set_user_attr("name", name)
        if pid is not None:
            trial.set_user_attr("owner_host", "another-host" if name == "elsewhere" else os.uname().nodename)
            trial.set_user_attr("owner_pid", pid)
            trial.set_user_attr("owner_started", started)
    logs = []
    failed = storage_lib.fail_orphaned_trials(study, storage, logs.append)
    states = {t.user_attrs["name"]: t.state.name for t in study.get_trials()}
    assert states == {"dead": "FAIL", "alive": "RUNNING", "reused": "FAIL", "elsewhere": "RUNNING",
                      "unowned": "RUNNING"}
    assert failed == [0, 2] and f"left RUNNING by process {dead} on" in logs[0]


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_a_search_killed_and_rerun_at_once_retries_the_killed_trial(tmp_path):
    """SIGKILL mid-trial, rerun within the heartbeat grace period (60 s): the trial is retried, none left RUNNING."""
    script = textwrap.dedent(f"""
        import os, pathlib, signal, sys
        sys.path.insert(0, {os.path.dirname(__file__)!r} + "/../..")
        import keras
        from tests.search import test_study as t

        class Kill(keras.callbacks.Callback):
            def on_epoch_end(self, epoch, logs=None):
                os.kill(os.getpid(), signal.SIGKILL)

        t._run(pathlib.Path({str(tmp_path)!r}), 2, callbacks=[Kill()])
    """)
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    killed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert killed.returncode == -9, killed.stderr[-2000:]
    stored = optuna.load_study(study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}")
    assert [t.state.name for t in stored.trials] == ["RUNNING"]
    logs = []
    result = search.run(  # at once: the killed trial's heartbeat is still fresh
        test_study.build_model, test_study.blobs(256, 0), test_study.blobs(128, 1), method="hs", n_trials=2,
        output=tmp_path / "out", study_name="t", storage=f"sqlite:///{tmp_path / 's.db'}", pretrain_epochs=3,
        max_drop=2.0, schedule=test_study.SCHEDULE, log=logs.append)
    states = [(t["number"], t["state"], t["retry_of"]) for t in result.trials]
    assert states[0] == (0, "FAIL", None) and states[1] == (1, "COMPLETE", 0), states
    assert [s for _, s, _ in states].count("COMPLETE") == 2 and "RUNNING" not in [s for _, s, _ in states]
    assert result.trials[1]["params"] == result.trials[0]["params"]
    assert any("trial 0 was left RUNNING by process" in str(line) for line in logs)
