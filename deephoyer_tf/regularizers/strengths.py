"""The DeepHoyer regularizers attached to a model, and their strength variables."""

from __future__ import annotations

from typing import TYPE_CHECKING

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import flavours
from deephoyer_tf.regularizers.regularizers import DeepHoyerRegularizer

if TYPE_CHECKING:
    from typing import Any
    from typing import Iterable

    ModelLike = Any  # a Keras 3 or tf_keras model
    LayerLike = Any  # a Keras 3 or tf_keras layer


def _layer_regularizers(model_or_layers):
    """Yields ``(layer, regularizer)`` for each DeepHoyer regularizer on each layer."""
    for layer in flavours.flat_layers(model_or_layers):
        seen = set()
        for name, value in vars(layer).items():
            if (
                name.endswith("regularizer")
                and isinstance(value, DeepHoyerRegularizer)
                and id(value) not in seen
            ):
                seen.add(id(value))
                yield layer, value


def deephoyer_regularizers(model_or_layers):
    """Yields each DeepHoyer regularizer attached to a layer (any ``*regularizer`` attribute), once."""
    seen = set()
    for _, regularizer in _layer_regularizers(model_or_layers):
        if id(regularizer) not in seen:
            seen.add(id(regularizer))
            yield regularizer


def track_strengths(model_or_layers: ModelLike | Iterable[LayerLike]) -> None:
    """Makes every strength variable part of the state of the layers it regularizes.

    Only JAX needs it (`deephoyer_tf._internal.backend.track_state`): there
    `fit` compiles its step as a function of the model's state, and a strength
    outside that state would keep, in the compiled step, the value it had when
    the step was traced. The variables are not weights: `get_weights`, configs
    and saved files are unchanged. A no-op on TensorFlow and PyTorch and for
    tf_keras layers. A model whose state grew gets its compiled step rebuilt
    (under a `keras.distribution`, the step's layout lists the state).
    """
    added = False
    for layer, regularizer in _layer_regularizers(model_or_layers):
        if not flavours.is_tf_keras(layer) and backend.is_jax():
            added = backend.track_state(layer, regularizer.strength_variables()) or added
            regularizer._tracked = True
    if added and flavours.is_model(model_or_layers):
        backend.retrace(model_or_layers)


def strength_variables(model_or_layers: ModelLike | Iterable[LayerLike]) -> list[Any]:
    """All strength variables of the DeepHoyer regularizers in a model.

    Assigning one changes the penalty in the compiled train step, on every
    backend: on JAX this function also makes the variables part of the
    model's (non-weight) state, which `fit` passes into its compiled step
    (`track_strengths`).

    Args:
        model_or_layers: a Keras model (either flavour) or an iterable of layers.

    Returns:
        A list of distinct variables (`tf.Variable` on TensorFlow,
        `keras.Variable` on JAX and PyTorch), in layer order.
    """
    if not hasattr(model_or_layers, "layers"):
        model_or_layers = list(model_or_layers)  # read twice
    track_strengths(model_or_layers)
    seen, found = set(), []
    for regularizer in deephoyer_regularizers(model_or_layers):
        for variable in regularizer.strength_variables():
            if id(variable) not in seen:
                seen.add(id(variable))
                found.append(variable)
    return found
