"""Registering the tf_keras faces of deephoyer_tf's objects, without importing tf_keras.

Keras 3 and tf_keras keep separate registries of serializable objects and of
layer classes. `import deephoyer_tf` must import neither tf_keras nor TFMOT
(TFMOT's import switches ``tf.keras`` to Keras 2 for the whole process), yet
models saved by tf_keras with deephoyer_tf objects must load without
`custom_objects`. So each module that has a tf_keras face registers a function
here with `on_tf_keras`; the functions run, once, with the `tf_keras` module:

* at ``import deephoyer_tf`` when tf_keras is already imported;
* right after tf_keras is imported later (a post-import hook on
  `sys.meta_path`, which imports nothing itself);
* at the latest when a tf_keras model or layer is handed to deephoyer_tf
  (`ensure_registered`, called by the flavour checks).

This module imports nothing from deephoyer_tf.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import threading

_HOOKS = []
_RAN = []
_LOCK = threading.RLock()


def tf_keras_installed():
    """True when the tf_keras package can be imported (without importing it)."""
    return "tf_keras" in sys.modules or importlib.util.find_spec("tf_keras") is not None


def _tf_keras_ready():
    module = sys.modules.get("tf_keras")
    # A module still executing its __init__ has no `utils` yet.
    return module is not None and hasattr(module, "utils") and hasattr(module, "layers")


def on_tf_keras(function):
    """Runs ``function(tf_keras)`` once tf_keras is imported (now if it is). Returns it."""
    with _LOCK:
        _HOOKS.append(function)
        if _tf_keras_ready() and _RAN:
            function(sys.modules["tf_keras"])
            _RAN.append(function)
    return function


def ensure_registered():
    """Runs the pending registrations if tf_keras is imported; True if it is."""
    if not _tf_keras_ready():
        return False
    with _LOCK:
        module = sys.modules["tf_keras"]
        if not _RAN:
            _RAN.append(None)  # marks "started", so hooks added later run at once
        for function in list(_HOOKS):
            if function not in _RAN:
                _RAN.append(function)
                function(module)
    return True


class _Loader(importlib.abc.Loader):
    """Wraps tf_keras' own loader and runs the registrations after it."""

    def __init__(self, loader):
        self.loader = loader

    def create_module(self, spec):
        return self.loader.create_module(spec)

    def exec_module(self, module):
        self.loader.exec_module(module)
        ensure_registered()

    def __getattr__(self, name):
        return getattr(self.loader, name)


class _PostImportFinder(importlib.abc.MetaPathFinder):
    """Finds `tf_keras` with the other finders, wrapping its loader in `_Loader`."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname != "tf_keras":
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None and hasattr(spec.loader, "exec_module"):
                    spec.loader = _Loader(spec.loader)
                return spec
        return None


def install():
    """Registers now if tf_keras is imported, else when it is imported."""
    if ensure_registered():
        return
    if not any(isinstance(f, _PostImportFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _PostImportFinder())
