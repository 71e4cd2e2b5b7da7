"""`regularize`: attach a regularizer to the kernels of an existing model."""

from __future__ import annotations

import collections.abc
from typing import TYPE_CHECKING

from deephoyer_tf._internal import flavours
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable
    from typing import Mapping
    from typing import Sequence

    ModelLike = Any  # a Keras 3 or tf_keras model
    RegularizerLike = Callable[[Any], Any]  # a Keras regularizer (callable with get_config)


def _is_regularizer(obj):
    return callable(obj) and hasattr(obj, "get_config")


def regularize(
    model: ModelLike,
    regularizer: RegularizerLike | Mapping[str, RegularizerLike | None],
    *,
    bias_regularizer: RegularizerLike | None = None,
    layer_types: Sequence[str] | str | None = None,
) -> ModelLike:
    """Returns a copy of `model` whose kernels carry `regularizer`.

    The copy has the same architecture and weights (so the same outputs); the
    original is untouched. The paper starts from a trained dense model; this is
    how to do that::

        dense = keras.models.load_model("dense.keras")
        model = deephoyer_tf.regularize(dense, deephoyer_tf.HoyerSquare(1e-4))
        model.compile(...)  # the copy is not compiled
        model.fit(...)

    The same regularizer instance is attached to every selected layer, so
    setting ``regularizer.strength`` afterwards acts on all of them. Group
    regularizers are adapted to each layer's kernel layout (for example
    ``"out_in"`` for Conv2DTranspose) by copies that share its strength
    variables.

    Args:
        model: a built Sequential or functional model, Keras 3 or tf_keras.
            Nested Sequential/functional models are handled recursively.
        regularizer: a regularizer (any Keras regularizer, DeepHoyer or not),
            or a mapping from layer name to regularizer (layers not named, or
            mapped to None, keep their own).
        bias_regularizer: optional regularizer for the biases of the same
            layers. Biases are not regularized by default.
        layer_types: names of the layer types to regularize, default
            `deephoyer_tf.structure.registry.default_types()` (``Dense``,
            ``Conv1D/2D/3D`` and registered custom layers); any of
            `deephoyer_tf.supported_layer_types()` may be listed.

    Returns:
        A new, uncompiled model.

    Raises:
        TypeError: `model` is not a Keras model, or `regularizer` is not one.
        ValueError: `model` is subclassed or not built, or `layer_types` names
            an unsupported type.
    """
    flavours.check_model(model)
    if isinstance(regularizer, collections.abc.Mapping):
        chooser = dict(regularizer)
        bad = [v for v in chooser.values() if v is not None and not _is_regularizer(v)]
    else:
        chooser = regularizer
        bad = [] if _is_regularizer(regularizer) else [regularizer]
    if bad:
        raise TypeError(
            "Invalid type for argument `regularizer`. Expected a Keras "
            "regularizer (callable with `get_config`) or a mapping from layer "
            f"name to regularizer. Received: {bad[0]!r} of type {type(bad[0]).__name__}"
        )
    if bias_regularizer is not None and not _is_regularizer(bias_regularizer):
        raise TypeError(
            "Invalid type for argument `bias_regularizer`. Expected a Keras "
            f"regularizer or None. Received: bias_regularizer={bias_regularizer!r}"
        )
    types = registry.check_layer_types(layer_types)
    return _clone_with_regularizers(model, chooser, bias_regularizer, types)


def _clone_with_regularizers(model, chooser, bias_regularizer, types):
    if not flavours.is_graph_model(model):
        raise ValueError(
            f"regularize() cannot copy model {model.name!r} of type "
            f"{type(model).__name__}: it is a subclassed model, whose layer "
            "graph is not known. Pass the regularizer when you create its "
            "layers instead, e.g. Dense(..., kernel_regularizer="
            "deephoyer_tf.HoyerSquare(1e-4))."
        )
    if not model.built:
        raise ValueError(
            f"regularize() needs a built model; model {model.name!r} is not "
            "built. Give it an Input (or call it on data) first."
        )
    module = flavours.keras_module(model)

    def clone_layer(layer):
        if isinstance(layer, module.Model):
            return _clone_with_regularizers(layer, chooser, bias_regularizer, types)
        new = type(layer).from_config(layer.get_config())
        name = registry.layer_type(layer)
        if name not in types:
            return new
        if isinstance(chooser, dict):
            regularizer = chooser.get(layer.name)
            if regularizer is None:
                return new
        else:
            regularizer = chooser
        for spec in registry.kernel_specs(layer):
            adapted = regularizer
            if hasattr(regularizer, "with_layout"):
                adapted = regularizer.with_layout(spec.layout)
            setattr(new, spec.regularizer_attribute, adapted)
        if bias_regularizer is not None and hasattr(new, "bias_regularizer"):
            new.bias_regularizer = bias_regularizer
        return new

    clone = module.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
