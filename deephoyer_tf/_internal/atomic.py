"""Crash-safe writes: every file the package writes appears whole or not at all.

A file is written under a temporary name in its own folder (same file
system), flushed to disk, then renamed over the final name with `os.replace`,
which is atomic on POSIX and Windows. A process killed at any point leaves
either the old file or the new one, never a truncated one; at worst a
``.NAME.tmp-XXXX`` file is left behind, which nothing reads.

* `atomic_write_text`, `atomic_write_bytes`: a string or bytes.
* `atomic_path`: a context manager yielding a temporary path for writers that
  take a path (``model.save``, ``np.savez``, ``figure.savefig``); the rename
  happens when the block exits without an exception.
* `atomic_replace_dir`: a folder, written whole under a temporary name, then
  renamed into place.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import shutil
import tempfile


def _temporary_name(path: pathlib.Path) -> pathlib.Path:
    # Same folder (a rename across file systems is not atomic), same suffix
    # (Keras and NumPy choose the format from it), a name nothing else reads.
    suffix = ".weights.h5" if path.name.endswith(".weights.h5") else (path.suffix or ".tmp")
    handle, name = tempfile.mkstemp(prefix=f".{path.name}.tmp-", suffix=suffix, dir=path.parent)
    os.close(handle)
    return pathlib.Path(name)


def _fsync(path: pathlib.Path):
    try:
        with open(path, "rb") as f:
            os.fsync(f.fileno())
    except OSError:  # pragma: no cover - e.g. a file system without fsync
        pass


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike):
    """Yields a temporary path beside `path`; renames it to `path` if the block succeeds.

    The parent folder is created. On an exception the temporary file is
    removed and `path` is left as it was. Example::

        with atomic_path("out/model.keras") as tmp:
            model.save(tmp)
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary_name(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"nothing was written to the temporary file {tmp} for {path}")
        _fsync(tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> pathlib.Path:
    """Writes `data` to `path` atomically; returns the path."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return pathlib.Path(path)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> pathlib.Path:
    """Writes `text` to `path` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode(encoding))


@contextlib.contextmanager
def atomic_replace_dir(path: str | os.PathLike):
    """Yields a temporary folder beside `path`; when the block succeeds it becomes `path`.

    An existing `path` is replaced (it is moved aside first, then removed: a
    crash in between leaves the new folder in place and an old one under a
    temporary name, which nothing reads).
    """
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        old = None
        if path.exists():
            old = pathlib.Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.rmdir(old)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
