"""`fit_resumable`: backups written whole, damaged ones reported and skipped, damaged results retrained.

Before: Keras' `BackupAndRestore` overwrote its two files in place; a truncated
``latest.weights.h5`` gave h5py's OSError with no path, a bad
``training_metadata.json`` a JSONDecodeError, a bad ``regularized.npz`` BadZipFile.
"""

import json
import os

import keras
import numpy as np
import pytest

from deephoyer_tf._internal import atomic
from deephoyer_tf.training import resumable


class _StopAt(keras.callbacks.Callback):
    def __init__(self, epoch=None):
        super().__init__()
        self.epoch, self.seen = epoch, []

    def on_epoch_begin(self, epoch, logs=None):
        self.seen.append(epoch)

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def _model(dropout=False):
    keras.utils.set_random_seed(0)
    layers = [keras.Input((6,)), keras.layers.Dense(8, activation="relu")]
    layers += [keras.layers.Dropout(0.3)] if dropout else []
    model = keras.Sequential([*layers, keras.layers.Dense(3)])
    model.compile(keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(1e-2, 40)),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 6)).astype("float32"), rng.integers(0, 3, 64)


KW = dict(epochs=5, batch_size=16, verbose=0, shuffle=False)  # in one process the shuffle order differs per fit


_WHOLE = {}


def _whole(dropout=False):
    """The weights of the uninterrupted fit (trained once per module)."""
    if dropout not in _WHOLE:
        model = _model(dropout)
        resumable.fit_resumable(model, *_data(), log=lambda *a: None, **KW)
        _WHOLE[dropout] = model.get_weights()
    return _WHOLE[dropout]


def _interrupted(tmp_path, at_epoch, dropout=False):
    with pytest.raises(KeyboardInterrupt):
        resumable.fit_resumable(_model(dropout), *_data(), backup_dir=tmp_path / "b",
                                callbacks=[_StopAt(at_epoch)], log=lambda *a: None, **KW)


def _resume(tmp_path, dropout=False):
    model, watch, logs = _model(dropout), _StopAt(), []
    resumable.fit_resumable(model, *_data(), backup_dir=tmp_path / "b", callbacks=[watch], log=logs.append, **KW)
    return model.get_weights(), watch.seen, logs


def _assert_same(got, want):
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


@pytest.mark.slow
def test_a_resumed_fit_with_dropout_equals_an_uninterrupted_one(tmp_path):
    """The random state of Dropout is backed up too: the resumed run draws what the whole run drew."""
    _interrupted(tmp_path, 2, dropout=True)
    assert sorted(p.name for p in (tmp_path / "b").iterdir()) == ["epoch-0002", "epoch-0003"]  # the newest two
    weights, seen, logs = _resume(tmp_path, dropout=True)
    assert seen == [3, 4] and "3 of 5 epochs done" in logs[0]
    _assert_same(weights, _whole(dropout=True))
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("damage", ["truncate", pytest.param("random", marks=pytest.mark.slow),
                                    pytest.param("delete", marks=pytest.mark.slow)])
def test_a_damaged_newest_backup_falls_back_to_the_previous_one(tmp_path, damage):
    _interrupted(tmp_path, 2)
    weights_file = tmp_path / "b" / "epoch-0003" / resumable.WEIGHTS
    if damage == "truncate":
        weights_file.write_bytes(weights_file.read_bytes()[:1000])
    elif damage == "random":
        weights_file.write_bytes(os.urandom(5000))
    else:
        weights_file.unlink()
    weights, seen, logs = _resume(tmp_path)
    assert seen == [2, 3, 4]  # from the previous backup (2 epochs done)
    assert logs[0].startswith(f"[fit] the backup in {tmp_path / 'b' / 'epoch-0003'} cannot be used: {weights_file}")
    assert logs[0].endswith("; trying the previous backup")
    assert "2 of 5 epochs done" in logs[1]
    _assert_same(weights, _whole())


@pytest.mark.parametrize("metadata, message", [
    ('{"epo', "is unreadable (JSONDecodeError: Unterminated string"),
    ('{"epoch": "3"}', "gives epoch '3'; expected an int in [0, 5]"),
    ('{"epoch": 99}', "gives epoch 99; expected an int in [0, 5]"),
    ("[]", "is unreadable (TypeError: list indices must be integers"),
])
def test_bad_metadata_is_named(tmp_path, metadata, message):
    (tmp_path / resumable.METADATA).write_text(metadata)
    with pytest.raises(resumable.CorruptStateError) as error:
        resumable._read_epoch(tmp_path, 5)
    assert str(error.value).startswith(f"{tmp_path / resumable.METADATA} {message}")


def test_bad_metadata_in_every_backup_starts_the_stage_afresh(tmp_path):
    _interrupted(tmp_path, 1)
    for folder in (tmp_path / "b").iterdir():
        (folder / resumable.METADATA).write_text('{"epo')
    weights, seen, logs = _resume(tmp_path)
    assert seen == [0, 1, 2, 3, 4]
    assert [line.rsplit("; ", 1)[1] for line in logs] == ["trying the previous backup", "starting the stage afresh"]
    assert all(resumable.METADATA in line for line in logs)
    _assert_same(weights, _whole())


@pytest.mark.slow
def test_keras_own_backup_layout_is_read_and_a_truncated_one_is_skipped(tmp_path):
    """The files Keras' BackupAndRestore leaves (in the folder itself), as an interrupted older run left them."""
    model = _model()
    keras_backup = keras.callbacks.BackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)
    model.fit(*_data(), callbacks=[keras_backup, _StopAt()], **{**KW, "epochs": 2})
    assert (tmp_path / "b" / "latest.weights.h5").exists()
    weights, seen, logs = _resume(tmp_path)
    assert seen == [2, 3, 4] and "2 of 5 epochs done" in logs[0]
    _assert_same(weights, _whole())

    model.fit(*_data(), callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path / "b"), delete_checkpoint=False)],
              **{**KW, "epochs": 2})
    path = tmp_path / "b" / "latest.weights.h5"
    path.write_bytes(path.read_bytes()[:2000])  # killed while Keras wrote it
    weights, seen, logs = _resume(tmp_path)
    assert seen == [0, 1, 2, 3, 4]
    assert f"cannot be used: {path} is unreadable (OSError" in logs[0] and logs[0].endswith("starting the stage afresh")
    _assert_same(weights, _whole())  # the failed load left nothing behind


@pytest.mark.parametrize("content", [b"PK\x03\x04garbage", pytest.param(b"", marks=pytest.mark.slow)])
def test_a_damaged_recorded_stage_is_trained_again(tmp_path, content):
    done = tmp_path / "done.npz"
    done.write_bytes(content)
    model, watch, logs = _model(), _StopAt(), []
    assert resumable.fit_resumable(model, *_data(), done_path=done, callbacks=[watch], log=logs.append, **KW)
    assert watch.seen == [0, 1, 2, 3, 4]
    assert logs[0].startswith(f"[fit] the recorded result cannot be used: {done} is unreadable (")
    assert logs[0].endswith("training the stage again")
    _assert_same(resumable.load_weights(done), model.get_weights())  # replaced by the good one


def test_a_recorded_stage_of_another_model_is_trained_again(tmp_path):
    done = tmp_path / "done.npz"
    resumable.save_weights(done, [np.zeros((2, 2))])
    logs = []
    resumable.fit_resumable(_model(), *_data(), done_path=done, log=logs.append, **KW)
    assert "holds 1 arrays of shapes [(2, 2)]; the model has 4 weights" in logs[0]


def test_atomic_writes_leave_the_old_file_when_the_writer_fails(tmp_path):
    path = tmp_path / "sub" / "results.json"
    atomic.atomic_write_text(path, json.dumps({"a": 1}))
    with pytest.raises(RuntimeError), atomic.atomic_path(path) as tmp:
        tmp.write_text('{"a": 2, "trunc')
        raise RuntimeError("killed mid-write")
    assert json.loads(path.read_text()) == {"a": 1}
    assert [p.name for p in path.parent.iterdir()] == ["results.json"]  # no temporary file left
    with atomic.atomic_path(tmp_path / "m.weights.h5") as tmp:
        assert tmp.name.endswith(".weights.h5") and tmp.parent == tmp_path  # Keras picks the format by suffix
        _model().save_weights(tmp)
    assert (tmp_path / "m.weights.h5").stat().st_size > 0
