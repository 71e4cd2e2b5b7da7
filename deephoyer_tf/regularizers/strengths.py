"""The DeepHoyer regularizers attached to a model, and their strength variables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deephoyer_tf._internal import flavours
from deephoyer_tf.regularizers.regularizers import DeepHoyerRegularizer

if TYPE_CHECKING:
    from typing import Any
    from typing import Iterable

    import tensorflow as tf

    ModelLike = Any  # a Keras 3 or tf_keras model
    LayerLike = Any  # a Keras 3 or tf_keras layer


def deephoyer_regularizers(model_or_layers):
    """Yields each DeepHoyer regularizer attached to a layer (any ``*regularizer`` attribute), once."""
    seen = set()
    for layer in flavours.flat_layers(model_or_layers):
        for name, value in vars(layer).items():
            if (
                name.endswith("regularizer")
                and isinstance(value, DeepHoyerRegularizer)
                and id(value) not in seen
            ):
                seen.add(id(value))
                yield value


def strength_variables(model_or_layers: ModelLike | Iterable[LayerLike]) -> list[tf.Variable]:
    """All strength variables of the DeepHoyer regularizers in a model.

    Args:
        model_or_layers: a Keras model (either flavour) or an iterable of layers.

    Returns:
        A list of distinct `tf.Variable`s, in layer order.
    """
    seen, found = set(), []
    for regularizer in deephoyer_regularizers(model_or_layers):
        for variable in regularizer.strength_variables():
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append(variable)
    return found
