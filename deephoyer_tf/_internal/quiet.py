"""A quiet ``deephoyer-tf``: TensorFlow's start-up logs silenced before TensorFlow is imported.

TensorFlow's C++ code logs on stderr as its libraries load (CUDA drivers not
found, CPU instructions, oneDNN): 4 to 9 lines before any command runs. Some
of those lines come from absl before its logging is initialized, and no
environment variable turns them off (``TF_CPP_MIN_LOG_LEVEL=3`` included).
So the command line, unless asked to be verbose:

1. sets ``TF_CPP_MIN_LOG_LEVEL=2`` (warnings and info off, errors kept),
   unless the user set it;
2. imports TensorFlow and lists its devices (CUDA's probe on a machine
   without a GPU logs an error line) with the process's stderr (file
   descriptor 2) captured; the captured text is written back if the import
   fails, so a broken install still says why;
3. sets TensorFlow's and absl's Python loggers to errors only (`settle`).

The command line is verbose with ``--verbose`` (or ``-v``) anywhere in its
arguments, or when the user set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1 (asking
for TensorFlow's logs). `for_command_line` acts only in the ``deephoyer-tf``
process (the console script or ``python -m deephoyer_tf.cli``): importing
the package from Python changes nothing.

This module imports nothing of the package, and TensorFlow only when it acts.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile

ENV_VAR = "TF_CPP_MIN_LOG_LEVEL"
#: ``TF_CPP_MIN_LOG_LEVEL`` set when the user did not: errors only.
QUIET_LEVEL = "2"
VERBOSE_FLAGS = ("--verbose", "-v")
_SCRIPT_NAMES = ("deephoyer-tf", "deephoyer-tf.exe", "deephoyer-tf-script.py")


def is_command_line(argv=None, orig_argv=None) -> bool:
    """Whether this process is ``deephoyer-tf`` (console script or ``python -m deephoyer_tf.cli``)."""
    argv = sys.argv if argv is None else argv
    orig_argv = getattr(sys, "orig_argv", []) if orig_argv is None else orig_argv
    if argv and os.path.basename(str(argv[0])) in _SCRIPT_NAMES:
        return True
    arguments = list(orig_argv)
    for i, argument in enumerate(arguments[:-1]):
        if argument == "-m":
            return arguments[i + 1] == "deephoyer_tf.cli"
    return False


def wants_verbose(arguments, environ=None) -> bool:
    """True with ``--verbose``/``-v`` among `arguments`, or ``TF_CPP_MIN_LOG_LEVEL`` set to 0 or 1."""
    environ = os.environ if environ is None else environ
    if any(argument in VERBOSE_FLAGS for argument in arguments):
        return True
    return environ.get(ENV_VAR, "").strip() in ("0", "1")


@contextlib.contextmanager
def captured_stderr():
    """Captures file descriptor 2 (C++ logs included); writes the text back if the block raises."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            capture.seek(0)
            os.write(2, capture.read())
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def quiet_import():
    """Sets ``TF_CPP_MIN_LOG_LEVEL`` (unless set) and imports TensorFlow with stderr captured."""
    os.environ.setdefault(ENV_VAR, QUIET_LEVEL)
    if "tensorflow" in sys.modules:  # too late: already imported and logged
        return
    with captured_stderr():
        import tensorflow

        # Looking for devices logs once more on a machine without a GPU ("failed call to
        # cuInit", an error-level line); it configures nothing, so it is done here, captured.
        tensorflow.config.list_physical_devices()


def for_command_line():
    """Called first by ``import deephoyer_tf``: quiets TensorFlow's import in the ``deephoyer-tf`` process."""
    if is_command_line() and not wants_verbose(sys.argv[1:]):
        quiet_import()


def settle(verbose: bool):
    """After TensorFlow is imported: its and absl's Python loggers at errors only, unless `verbose`."""
    if verbose:
        return
    import logging

    logging.getLogger("tensorflow").setLevel(logging.ERROR)
    try:
        from absl import logging as absl_logging
    except ImportError:  # pragma: no cover - absl comes with TensorFlow
        return
    absl_logging.set_verbosity(absl_logging.ERROR)


for_command_line()  # on import: `deephoyer_tf/__init__.py` imports this module before anything else
