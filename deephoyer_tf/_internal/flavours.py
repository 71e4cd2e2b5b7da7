"""Telling Keras 3 from tf_keras (Keras 2) objects, and walking a model's layers.

Nothing here imports tf_keras: a tf_keras object can only exist once tf_keras
is imported, so its module is taken from `sys.modules`. Handing a tf_keras
object to any check here completes the tf_keras registrations
(`tf_keras_faces.ensure_registered`).
"""

from __future__ import annotations

import sys

import keras

from deephoyer_tf._internal import tf_keras_faces


def is_tf_keras(obj) -> bool:
    """True when `obj` (a model, layer or class) comes from tf_keras (Keras 2)."""
    cls = obj if isinstance(obj, type) else type(obj)
    found = any(
        (getattr(c, "__module__", "") or "").split(".")[0] == "tf_keras" for c in cls.__mro__
    )
    if found:
        tf_keras_faces.ensure_registered()
    return found


def keras_module(obj):
    """The Keras package (`keras` or `tf_keras`) that `obj` belongs to."""
    if is_tf_keras(obj):
        return sys.modules["tf_keras"]
    return keras


def is_model(obj) -> bool:
    """True for a Keras model (either flavour)."""
    if is_tf_keras(obj):
        return isinstance(obj, sys.modules["tf_keras"].Model)
    return isinstance(obj, keras.Model)


def check_model(model, argument="model"):
    """Raises a clear `TypeError` unless `model` is a Keras model of either flavour.

    A tf_keras model on a Keras 3 backend other than TensorFlow raises
    `backend.BackendError`: tf_keras computes with TensorFlow, deephoyer_tf
    with `keras.ops` of Keras 3's backend.
    """
    if is_model(model):
        if is_tf_keras(model):
            from deephoyer_tf._internal import backend

            backend.require_tensorflow(
                f"deephoyer_tf on the tf_keras (Keras 2) model {model.name!r}",
                "tf_keras always computes with TensorFlow, and deephoyer_tf computes "
                "with the backend of Keras 3: start the process with "
                "KERAS_BACKEND=tensorflow, or build the model with Keras 3 (`keras`).",
            )
        return
    raise TypeError(
        f"Invalid type for argument `{argument}`. Expected a Keras model "
        "(keras.Model or tf_keras.Model). "
        f"Received: {argument}={model!r} of type {type(model).__name__}"
    )


def is_graph_model(model) -> bool:
    """True for Sequential and functional models (those with a layer graph)."""
    module = keras_module(model)
    if isinstance(model, module.Sequential):
        return True
    # Keras 3: keras.src.models.functional.Functional; tf_keras: Functional.
    return any(c.__name__ == "Functional" for c in type(model).__mro__)


def flat_layers(model_or_layers):
    """Every layer of a model (or list of layers), nested models expanded, no repeats."""
    seen, result = set(), []

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        inner = getattr(layer, "layers", None)
        if inner is not None and is_model(layer):
            for child in inner:
                visit(child)
        else:
            result.append(layer)

    layers = model_or_layers.layers if hasattr(model_or_layers, "layers") else model_or_layers
    for layer in layers:
        visit(layer)
    return result
