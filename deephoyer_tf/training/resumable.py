"""Training that survives a crash: per-epoch backups written atomically, checked on resume.

`fit_resumable(model, x, y, epochs=..., backup_dir=..., done_path=...)` is
`model.fit` that can be killed at any instant (SIGKILL, power loss) and
called again to continue:

* After every epoch, `EpochBackup` writes the model's weights and optimizer
  state (``latest.weights.h5``) and the epoch count
  (``training_metadata.json``) into a new folder ``backup_dir/epoch-NNNN``,
  under a temporary name renamed into place once both files are complete, and
  then removes all but the previous backup. A kill leaves the last complete
  backup, never a weights file of one epoch beside the epoch count of
  another. (Keras' `BackupAndRestore` overwrites both files in place, one
  after the other: a kill in between leaves a truncated file, or weights and
  an epoch count that disagree.)
* On the next call the newest backup is checked (the metadata parse, the
  weights load into the model); a backup that does not is reported, and the
  previous one is tried, then the stage starts afresh. Nothing is loaded
  half-way: the model's weights and optimizer state are put back if a load
  fails.
* `done_path` (``.npz``) records a completed stage. A later call loads it
  instead of training; an unreadable file, or one whose arrays do not fit the
  model, is reported, removed, and the stage is trained again.

Backups written by Keras' own `BackupAndRestore` (``latest.weights.h5`` and
``training_metadata.json`` directly in `backup_dir`) are read too, as the
oldest candidate.
"""

from __future__ import annotations

import json
import pathlib
import re
import shutil

import keras
import numpy as np

from deephoyer_tf._internal import atomic

WEIGHTS = "latest.weights.h5"
METADATA = "training_metadata.json"
_EPOCH_DIR = re.compile(r"^epoch-(\d+)$")


class CorruptStateError(ValueError):
    """A file the package wrote earlier cannot be read back (truncated, garbled, or of another model)."""


def _describe(error):
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text}"[:300] if text else type(error).__name__


def save_weights(path, weights):
    """Writes a list of arrays to `path` (`.npz`), atomically (a temporary file, then a rename)."""
    with atomic.atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, *weights)


def load_weights(path, like=None):
    """The list of arrays `save_weights` wrote.

    Raises `CorruptStateError` (naming `path`) if the file cannot be read, or
    if `like` (a list of arrays, e.g. ``model.get_weights()``) is given and the
    arrays differ from it in number or shapes.
    """
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = [stored[f"arr_{i}"] for i in range(len(stored.files))]
    except FileNotFoundError:
        raise
    except Exception as error:  # noqa: BLE001 - BadZipFile, EOFError, OSError, KeyError, ValueError...
        raise CorruptStateError(f"{path} is unreadable ({_describe(error)})") from error
    if like is not None:
        want = [tuple(np.shape(w)) for w in like]
        got = [tuple(a.shape) for a in arrays]
        if got != want:
            raise CorruptStateError(
                f"{path} holds {len(got)} arrays of shapes {got[:4]}{'...' if len(got) > 4 else ''}; "
                f"the model has {len(want)} weights of shapes {want[:4]}{'...' if len(want) > 4 else ''}"
            )
    return arrays


def _epoch_dirs(backup_dir):
    found = []
    if backup_dir.is_dir():
        for child in backup_dir.iterdir():
            match = _EPOCH_DIR.match(child.name)
            if match and child.is_dir():
                found.append((int(match.group(1)), child))
    return [path for _, path in sorted(found, reverse=True)]


def backup_candidates(backup_dir):
    """The backup folders in `backup_dir`, newest first (Keras' own layout last)."""
    backup_dir = pathlib.Path(backup_dir)
    candidates = _epoch_dirs(backup_dir)
    if (backup_dir / WEIGHTS).exists() or (backup_dir / METADATA).exists():
        candidates.append(backup_dir)
    return candidates


def _restore_random_state(model, folder):
    """Dropout and other seeded layers draw what they would have drawn without the interruption."""
    try:
        stored = json.loads((folder / METADATA).read_text(encoding="utf-8")).get("random_state", [])
    except (OSError, ValueError, AttributeError):  # read once by _read_epoch already
        return
    variables = _random_state_variables(model)
    if not isinstance(stored, list) or len(stored) != len(variables):
        return  # another model, or a backup of Keras' own
    for value, variable in zip(stored, variables):
        if np.shape(value) == tuple(variable.shape):
            variable.assign(np.asarray(value, dtype=variable.dtype))


def _read_epoch(folder, epochs):
    path = folder / METADATA
    try:
        metadata = json.loads(path.read_text(encoding="utf-8"))
        epoch = metadata["epoch"]
    except Exception as error:  # noqa: BLE001 - missing, truncated, not JSON, no "epoch"
        raise CorruptStateError(f"{path} is unreadable ({_describe(error)})") from error
    if isinstance(epoch, bool) or not isinstance(epoch, int) or not 0 <= epoch <= epochs:
        raise CorruptStateError(f"{path} gives epoch {epoch!r}; expected an int in [0, {epochs}]")
    return epoch


def _random_state_variables(model):
    """The model's random-generator states (e.g. Dropout's `SeedGenerator`): not in its weights file."""
    weights = {id(v) for v in model.weights}
    return [v for v in model.variables if id(v) not in weights and "seed_generator" in v.path]


def _state_variables(model):
    variables = list(model.weights)
    if model.optimizer is not None:
        variables += list(model.optimizer.variables)
    return variables


def restore_backup(model, backup_dir, epochs, log=print, stage="fit"):
    """Loads the newest readable backup of `backup_dir` into `model`; returns its epoch count (0: none).

    Each unreadable backup is reported through `log` and skipped; a failed
    load leaves the model's weights and optimizer state as they were.
    """
    candidates = backup_candidates(backup_dir)
    if not candidates:
        return 0
    if model.optimizer is not None and not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)  # its slots must exist to be loaded
    variables = _state_variables(model)
    for number, folder in enumerate(candidates):
        try:
            epoch = _read_epoch(folder, epochs)
            weights = folder / WEIGHTS
            if not weights.exists():
                raise CorruptStateError(f"{weights} is missing")
            saved = [v.numpy() for v in variables]
            try:
                model.load_weights(weights)
            except Exception as error:  # noqa: BLE001 - truncated HDF5, other model...
                for variable, value in zip(variables, saved):
                    variable.assign(value)
                raise CorruptStateError(f"{weights} is unreadable ({_describe(error)})") from error
            _restore_random_state(model, folder)
        except CorruptStateError as error:
            rest = "trying the previous backup" if number + 1 < len(candidates) else \
                "starting the stage afresh"
            log(f"[{stage}] the backup in {folder} cannot be used: {error}; {rest}")
            continue
        log(f"[{stage}] resuming from the backup in {folder}: {epoch} of {epochs} epochs done")
        return epoch
    return 0


class EpochBackup(keras.callbacks.Callback):
    """Writes an atomic backup of the model and its optimizer after every epoch (see the module).

    Keeps the newest `keep` backups; removes the folder when training ends
    normally (`delete_when_done`).
    """

    def __init__(self, backup_dir, keep=2, delete_when_done=True):
        super().__init__()
        self.backup_dir = pathlib.Path(backup_dir)
        self.keep = keep
        self.delete_when_done = delete_when_done

    def on_epoch_end(self, epoch, logs=None):
        target = self.backup_dir / f"epoch-{epoch + 1:04d}"
        with atomic.atomic_replace_dir(target) as tmp:
            self.model.save_weights(tmp / WEIGHTS)
            random_state = [np.asarray(v).tolist() for v in _random_state_variables(self.model)]
            (tmp / METADATA).write_text(json.dumps({"epoch": epoch + 1, "batch": 0,
                                                    "random_state": random_state}), encoding="utf-8")
        for old in _epoch_dirs(self.backup_dir)[self.keep:]:
            shutil.rmtree(old, ignore_errors=True)
        for name in (WEIGHTS, METADATA):  # Keras' layout, superseded
            (self.backup_dir / name).unlink(missing_ok=True)

    def on_train_end(self, logs=None):
        if self.delete_when_done:
            shutil.rmtree(self.backup_dir, ignore_errors=True)


def fit_resumable(model, x, y=None, *, epochs, backup_dir=None, done_path=None, log=print,
                  stage="fit", callbacks=(), **fit_kwargs):
    """`model.fit` that backs up every epoch and resumes after an interruption.

    With `backup_dir`, the model's weights and optimizer state are backed up
    at the end of every epoch (`EpochBackup`); a later call with the same
    folder restores the newest readable backup and continues at the next
    epoch (passed to `fit` as `initial_epoch`, so epoch-indexed callbacks
    such as `StrengthSchedule` see the right epoch). With `done_path`, the
    trained weights are written there when the stage completes, and a later
    call loads them instead of training: a pipeline of several stages resumes
    at the stage it was in. Unreadable backups or `done_path` files are
    reported through `log` and not used (see the module).

    Returns:
        True if the stage was trained here (fully or from a backup), False if
        it was loaded from `done_path`.
    """
    if done_path is not None and pathlib.Path(done_path).exists():
        try:
            model.set_weights(load_weights(done_path, like=model.get_weights()))
        except CorruptStateError as error:
            log(f"[{stage}] the recorded result cannot be used: {error}; training the stage again")
            pathlib.Path(done_path).unlink(missing_ok=True)
        else:
            log(f"[{stage}] done in an earlier run; weights loaded from {done_path}")
            return False
    callbacks = list(callbacks)
    initial_epoch = fit_kwargs.pop("initial_epoch", 0)
    if backup_dir is not None:
        initial_epoch = max(initial_epoch, restore_backup(model, backup_dir, epochs, log, stage))
        callbacks.insert(0, EpochBackup(backup_dir, delete_when_done=False))
    model.fit(x, y, epochs=epochs, initial_epoch=initial_epoch, callbacks=callbacks, **fit_kwargs)
    if done_path is not None:
        save_weights(done_path, model.get_weights())
    if backup_dir is not None:  # removed only once the result is recorded
        shutil.rmtree(backup_dir, ignore_errors=True)
    return True
