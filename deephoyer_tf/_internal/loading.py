"""The package's one model loader: no code from a model file runs unless the caller opts in.

A model file handed to the package is untrusted. A Keras `Lambda` layer
stores Python bytecode, and a config may name a module that the loader
imports; either runs code chosen by whoever wrote the file. Keras 3's
``safe_mode`` refuses these in `.keras` and `.h5` files, but tf_keras reads
`.h5` files without a safe mode at all. So `load_model`:

1. reads the stored config itself (``config.json`` of a `.keras` zip, the
   ``model_config`` attribute of an `.h5` file) and refuses, before any
   Keras loader runs, a `Lambda` layer, a serialized Python function or
   lambda, a reference to a module outside Keras, tf_keras, TFMOT,
   keras_hub and deephoyer_tf, a Python builtin, or a TensorFlow op that reads or writes
   files or runs Python (``TFOpLambda``);
2. loads with Keras 3 and ``safe_mode=True``;
3. only if Keras 3 cannot read the file (a tf_keras model), loads it with
   tf_keras (``safe_mode=True`` for `.keras`; `.h5` has none, step 1 is the
   guard there). A Keras 3 safe-mode refusal never falls back.

A SavedModel directory is refused in safe mode: its Keras metadata can hold
bytecode that tf_keras would run. ``safe_mode=False`` (command line:
``--unsafe``) skips all checks: use it only for files you wrote yourself or
otherwise trust, since the file can then run any code with your rights.
"""

from __future__ import annotations

import builtins
import json
import os
import zipfile

# Module prefixes a stored config may name: the loaders import or look up
# classes there. Anything else (``__main__``, ``os``, a user's module) would
# be imported by tf_keras' `.keras` loader.
# keras_hub's layers and models (backbones, task models) are configs and weights like
# Keras' own; a saved keras_hub model names them by their module.
_SAFE_MODULES = ("keras", "tf_keras", "tensorflow_model_optimization", "deephoyer_tf", "keras_hub")

# Layer classes that are serialized code.
_CODE_LAYERS = ("Lambda", "__lambda__")

# First name of a `TFOpLambda` function (the TF API path) that touches files,
# runs Python or loads libraries; other TF ops only compute on tensors.
_UNSAFE_TF_OPS = {
    "io", "raw_ops", "py_function", "numpy_function", "compat", "debugging", "print",
    "summary", "data", "saved_model", "load_op_library", "load_library", "experimental",
    "distribute", "config", "autograph", "function", "lite", "train", "sysconfig", "test",
    "tpu", "xla", "queue", "keras", "estimator", "profiler", "tf_keras", "__internal__",
}

_OPT_IN = ("If you trust this file, load it with deephoyer_tf.load_model(path, safe_mode=False) "
           "(command line: --unsafe); the file can then run any code with your rights.")


_AFTER_LOAD = []
_BEFORE_LOAD = []


def before_load(function):
    """Registers ``function(config)``, run before every load with the stored config (or None).

    `deephoyer_tf.structure` registers keras_hub's blocks here, so that the
    classes `shrink` gives them load.
    """
    _BEFORE_LOAD.append(function)
    return function


def after_load(function):
    """Registers ``function(model) -> model``, run on every model `load_model` returns.

    `sparsity.zero_mask` registers the rebuilding of held zeros' masks here
    (this module imports nothing from the package).
    """
    _AFTER_LOAD.append(function)
    return function


def _finish(model):
    for function in _AFTER_LOAD:
        model = function(model)
    return model


class UnsafeModelError(ValueError):
    """A model file holds code (a `Lambda` layer, a serialized function, a foreign module)."""


def _is_safe_module(module):
    return any(module == m or module.startswith(m + ".") for m in _SAFE_MODULES)


def _refusal(path, layer, what):
    where = f"layer {layer!r}" if layer else "its config"
    return UnsafeModelError(
        f"Refusing to load {os.fspath(path)!r}: {where} holds {what}, which would run on "
        f"loading or calling the model. {_OPT_IN}"
    )


def check_config(config, path="<config>"):
    """Raises `UnsafeModelError` if a stored model config holds code.

    `config` is the parsed JSON of a Keras 3 or tf_keras model. The check
    walks every nested dict and list; the error names the file, the
    innermost layer and what was found.
    """

    def walk(node, layer):
        if isinstance(node, list):
            for item in node:
                walk(item, layer)
            return
        if not isinstance(node, dict):
            return
        class_name = node.get("class_name")
        inner = node.get("config")
        if isinstance(class_name, str) and isinstance(inner, dict) and isinstance(inner.get("name"), str):
            layer = f"{inner['name']} ({class_name})"
        if class_name in _CODE_LAYERS:
            raise _refusal(path, layer, "a Lambda layer (Python code)")
        if class_name in ("TFOpLambda", "SlicingOpLambda") and isinstance(inner, dict):
            function = str(inner.get("function", ""))
            if function.split(".")[0] in _UNSAFE_TF_OPS:
                raise _refusal(path, layer, f"the TensorFlow op tf.{function} (files, Python or "
                               f"libraries)")
        for key, value in node.items():
            if isinstance(key, str) and key.endswith("_type") and value == "lambda":
                # tf_keras' Lambda-style configs: function_type, output_shape_type, mask_type.
                raise _refusal(path, layer, f"a serialized Python lambda ({key})")
        module = node.get("module")
        if isinstance(module, str) and "class_name" in node:
            if module == "builtins":
                if isinstance(class_name, str) and hasattr(builtins, class_name):
                    raise _refusal(path, layer, f"a reference to the Python builtin {class_name!r}")
            elif not _is_safe_module(module):
                raise _refusal(path, layer, f"a reference to the module {module!r} ({class_name!r}), "
                               f"outside Keras, tf_keras, TFMOT, keras_hub and deephoyer_tf")
        for key, value in node.items():
            if key != "module":
                walk(value, layer)

    walk(config, None)


def _stored_config(path):
    """The model config stored in `path`, parsed, or None if the file holds none we can read."""
    try:
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                if "config.json" not in archive.namelist():
                    return None
                return json.loads(archive.read("config.json").decode("utf-8"))
        import h5py

        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as f:
                raw = f.attrs.get("model_config")
                if raw is None:
                    return None
                if isinstance(raw, bytes):
                    raw = raw.decode("utf-8")
                return json.loads(str(raw))
    except (OSError, ValueError, zipfile.BadZipFile, UnicodeDecodeError):
        return None
    return None


def _is_safe_mode_refusal(error):
    text = str(error)
    return "safe_mode" in text or "safe mode" in text


def load_model(path, *, safe_mode=True, compile=True, custom_objects=None):  # noqa: A002 - Keras' name
    """Loads a Keras 3 or tf_keras model from a `.keras` or `.h5` file, refusing code by default.

    Args:
        path: a `.keras` or `.h5` model file (a SavedModel directory only with
            ``safe_mode=False``).
        safe_mode: True (default): refuse a file that holds code (a `Lambda`
            layer, a serialized function, a module outside Keras, tf_keras,
            TFMOT, keras_hub and deephoyer_tf), before any of it runs. False: load
            anything; the file can then run any code with your rights.
        compile: passed to Keras' ``load_model``.
        custom_objects: passed to Keras' ``load_model``.

    Returns:
        The model, a Keras 3 model if Keras 3 can read the file, else a
        tf_keras one. A model saved while `fix_zeros` held its zeros comes
        back with them held (masks rebuilt from the loaded zeros).

    Raises:
        FileNotFoundError: no such file.
        UnsafeModelError (a ValueError): the file holds code and ``safe_mode``
            is True; the message names the file, the layer and the opt-in.
    """
    if not isinstance(safe_mode, bool):
        raise TypeError(f"Invalid type for argument `safe_mode`. Expected a bool. "
                        f"Received: safe_mode={safe_mode!r} of type {type(safe_mode).__name__}")
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file: {path!r}")
    if safe_mode and os.path.isdir(path):
        raise UnsafeModelError(
            f"Refusing to load {path!r}: a SavedModel directory can hold Python bytecode in its "
            f"Keras metadata. Save the model as `.keras`. {_OPT_IN}"
        )
    config = None
    if safe_mode:
        config = _stored_config(path)
        if config is not None:
            check_config(config, path)

    import keras

    for function in _BEFORE_LOAD:
        function(config)
    try:
        model = keras.models.load_model(path, compile=compile, custom_objects=custom_objects,
                                        safe_mode=safe_mode)
    except Exception as keras3_error:  # noqa: BLE001 - maybe a tf_keras file
        if safe_mode and _is_safe_mode_refusal(keras3_error):
            raise UnsafeModelError(f"Refusing to load {path!r}: {keras3_error}") from None
        if safe_mode and config is None:
            # Not checked (no readable config): never hand it to a loader without safe mode.
            raise keras3_error
        try:
            import tf_keras
        except ImportError:
            raise keras3_error from None
        try:
            model = tf_keras.models.load_model(path, compile=compile, custom_objects=custom_objects,
                                               safe_mode=safe_mode)
        except Exception as tf_keras_error:
            if safe_mode and _is_safe_mode_refusal(tf_keras_error):
                raise UnsafeModelError(f"Refusing to load {path!r}: {tf_keras_error}") from None
            raise keras3_error from tf_keras_error
    return _finish(model)
