"""Helpers over Keras models of either flavour (Keras 3 or tf_keras)."""

import sys

import keras


def is_tf_keras(obj):
    """True when `obj` (a model, layer or class) comes from tf_keras (Keras 2)."""
    cls = obj if isinstance(obj, type) else type(obj)
    return any(
        (getattr(c, "__module__", "") or "").split(".")[0] == "tf_keras"
        for c in cls.__mro__
    )


def keras_module(obj):
    """The Keras package (`keras` or `tf_keras`) that `obj` belongs to."""
    if is_tf_keras(obj):
        return sys.modules["tf_keras"]
    return keras


def check_model(model, argument="model"):
    """Raises a clear `TypeError` unless `model` is a Keras model of either flavour."""
    if is_tf_keras(model):
        if isinstance(model, sys.modules["tf_keras"].Model):
            return
    elif isinstance(model, keras.Model):
        return
    raise TypeError(
        f"Invalid type for argument `{argument}`. Expected a Keras model "
        "(keras.Model or tf_keras.Model). "
        f"Received: {argument}={model!r} of type {type(model).__name__}"
    )


def is_graph_model(model):
    """True for Sequential and functional models (those with a layer graph)."""
    module = keras_module(model)
    if isinstance(model, module.Sequential):
        return True
    # Keras 3: keras.src.models.functional.Functional; tf_keras: Functional.
    return any(c.__name__ == "Functional" for c in type(model).__mro__)


def flat_layers(model):
    """Every layer of `model`, nested models expanded, in order, without repeats."""
    seen, result = set(), []

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        inner = getattr(layer, "layers", None)
        if inner is not None and isinstance(layer, keras_module(layer).Model):
            for child in inner:
                visit(child)
        else:
            result.append(layer)

    for layer in model.layers if hasattr(model, "layers") else model:
        visit(layer)
    return result


def deephoyer_regularizers(model_or_layers):
    """Yields each DeepHoyer regularizer attached to a layer, once."""
    from deephoyer_tf.regularizers import DeepHoyerRegularizer

    layers = (
        flat_layers(model_or_layers)
        if hasattr(model_or_layers, "layers")
        else list(model_or_layers)
    )
    seen = set()
    for layer in layers:
        for name, value in vars(layer).items():
            if (
                name.endswith("regularizer")
                and isinstance(value, DeepHoyerRegularizer)
                and id(value) not in seen
            ):
                seen.add(id(value))
                yield value
