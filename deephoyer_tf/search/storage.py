"""The study's storage: opened with clear errors, and trials of dead processes retried at once.

`open_storage(url, ...)` checks an Optuna storage URL before anything is
trained (`check_storage`) and opens it as an `optuna.storages.RDBStorage`
with heartbeats. A URL SQLAlchemy cannot parse or has no driver for, a
SQLite file in a folder that does not exist, or a file that is not a SQLite
database (truncated, garbled) raises a `ValueError` naming the URL or the
path, instead of SQLAlchemy's traceback.

Trial ownership: `claim(trial)` records the host, the process id and the
process's start time in the trial's user attributes
(``owner_host``, ``owner_pid``, ``owner_started``) when the trial starts.
`fail_orphaned_trials(study)`, called when a search starts, marks FAIL every
RUNNING trial owned by a process of this host that no longer exists (or
whose id now belongs to a process started later): its parameters are then
tried again, at once, instead of after Optuna's heartbeat grace period.
Trials of other hosts are left to the heartbeat.
"""

from __future__ import annotations

import os
import pathlib
import socket
import warnings

_SQLITE_HEADER = b"SQLite format 3\x00"


def _bad(url, expected, why):
    return ValueError(
        f"Invalid value for argument `storage`. Expected {expected}. Received: storage={url!r} ({why})"
    )


def check_storage(url):
    """Raises `ValueError` if `url` cannot be an Optuna RDB storage; creates and changes nothing."""
    if not isinstance(url, str):
        raise TypeError(f"Invalid type for argument `storage`. Expected a storage URL (str) or None. "
                        f"Received: storage={url!r} of type {type(url).__name__}")
    import sqlalchemy
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
        parsed.get_dialect()
    except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as error:
        raise _bad(url, "a SQLAlchemy database URL such as sqlite:///search.db or "
                   "postgresql://user@host/db", f"{type(error).__name__}: {error}") from None
    if parsed.get_backend_name() != "sqlite":
        return
    database = parsed.database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    path = pathlib.Path(database)
    if not path.parent.is_dir():
        raise _bad(url, "a SQLite file in an existing folder",
                   f"the folder {str(path.parent)!r} does not exist")
    if path.is_dir():
        raise _bad(url, "a SQLite file", f"{str(path)!r} is a folder")
    if path.exists() and path.stat().st_size > 0:
        try:
            with open(path, "rb") as f:
                header = f.read(len(_SQLITE_HEADER))
        except OSError as error:
            raise _bad(url, "a readable SQLite file", f"{str(path)!r}: {error}") from None
        if header != _SQLITE_HEADER:
            raise _bad(url, "a SQLite database file (an Optuna study)",
                       f"{str(path)!r} is not a SQLite database: truncated or another kind of file")


def open_storage(url, heartbeat_interval, grace_period, max_retry):
    """`url` checked and opened as an `RDBStorage` with heartbeats; errors name the URL."""
    import optuna
    import sqlalchemy

    check_storage(url)
    try:
        with warnings.catch_warnings():  # heartbeats are "experimental" in Optuna 5
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(
                url, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry))
    except (sqlalchemy.exc.SQLAlchemyError, ImportError, RuntimeError) as error:
        raise storage_error(url, error) from None


def storage_error(url, error):
    """The `ValueError` for a storage that failed while being read (e.g. a damaged SQLite file)."""
    text = str(error).strip().splitlines()[0][:300] if str(error).strip() else ""
    return _bad(url, "an Optuna storage that can be opened and read",
                f"{type(error).__name__}: {text}")


def _process_start(pid):
    """The start time of process `pid` in clock ticks since boot (Linux), else None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return int(fields[19])
    except (OSError, IndexError, ValueError):
        return None


def _alive(pid, started):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it exists
        pass
    if started is not None:
        now = _process_start(pid)
        if now is not None and now != started:
            return False  # the id was reused by a later process
    return True


def claim(trial):
    """Records this process as the owner of `trial` (host, process id, process start time)."""
    trial.set_user_attr("owner_host", socket.gethostname())
    trial.set_user_attr("owner_pid", os.getpid())
    trial.set_user_attr("owner_started", _process_start(os.getpid()))


def fail_orphaned_trials(study, storage, log=print):
    """Marks FAIL the RUNNING trials whose owning process on this host is gone; returns their numbers.

    `storage` is the study's storage (the `RDBStorage` `open_storage` returned).
    """
    import optuna

    host = socket.gethostname()
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        attrs = trial.user_attrs
        pid = attrs.get("owner_pid")
        if attrs.get("owner_host") != host or not isinstance(pid, int) or pid == os.getpid():
            continue
        if _alive(pid, attrs.get("owner_started")):
            continue
        try:
            trial_id = storage.get_trial_id_from_study_id_trial_number(
                storage.get_study_id_from_name(study.study_name), trial.number)
            changed = storage.set_trial_state_values(trial_id, optuna.trial.TrialState.FAIL)
        except RuntimeError:  # finished (or failed) by someone else meanwhile
            continue
        if changed:
            failed.append(trial.number)
            log(f"[search] trial {trial.number} was left RUNNING by process {pid} on {host}, "
                "which no longer exists; marked FAIL")
    return failed
