"""Zeros held fixed while fine-tuning: `fix_zeros`, `fix_zeros_tfmot` and `strip_zero_masks`.

The third stage of DeepHoyer (paper, section 4.3): after thresholding, the
model is fine-tuned with every zero weight kept at exactly zero, by the
`ZeroMask` constraint (`deephoyer_tf.sparsity.zero_mask`).

* `fix_zeros(model)`: both Keras flavours, in place; returns the same model,
  still compiled (fit goes on with the same optimizer state).
* `fix_zeros_tfmot(model)`: tf_keras only, the TFMOT workflow: a new model
  whose layers are wrapped in TFMOT's `PruneLowMagnitude` with masks frozen
  to the current nonzero pattern, for `strip_pruning`, `prune_scope` loading
  and pruning-preserving quantization. TFMOT is imported there only.
* `strip_zero_masks(model)`: the plain model behind either.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import tf_keras_faces
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import Sequence

    ModelLike = Any  # a Keras 3 or tf_keras model


def fix_zeros(model: ModelLike, *, layer_types: Sequence[str] | str | None = None) -> ModelLike:
    """Holds every zero kernel weight of `model` at exactly zero from now on, in place.

    After ``fix_zeros(model)``, each kernel weight that is 0 now stays 0
    through any number of training steps with any optimizer (SGD with
    momentum, Adam, AdamW's decoupled weight decay...): it is re-zeroed inside
    the compiled train step right after every optimizer update, as the
    kernel's constraint ``w -> where(mask, c(w), 0)``, ``mask = (w != 0)``
    taken now (``c``: the kernel's own constraint, if any, applied first).
    Costs one select per kernel weight per step.

    The same in both Keras flavours: `model` is modified in place and
    returned, still compiled, so `fit` can continue with the same optimizer
    state; the next `fit` retraces its train step. The model's weights and
    checkpoints are unchanged (the masks are not layer weights), so
    checkpoints stay loadable into a plain model; after restoring one, call
    `fix_zeros` again: the mask is the zero pattern of the weights. Calling
    it on a model already fixed refreshes the masks (zeros made since are
    held too). For TFMOT's wrapper workflow on tf_keras, see
    `fix_zeros_tfmot`.

    Saving: the masking constraint is also the layer's ``kernel_constraint``
    (without the mask), so a saved model records its held zeros.
    `deephoyer_tf.load_model` gives it back with the zeros held (masks
    rebuilt from the loaded zeros); a model loaded or cloned any other way
    raises at its first train step until `fix_zeros` is called on it, rather
    than letting the zeros leak. `strip_zero_masks` gives a plain config.

    Moving averages: with an optimizer with ``use_ema=True`` (the model's
    ``model.optimizer``), the held entries of the kernels' averages are kept
    at 0 too, so the averages written over the weights (every
    ``ema_overwrite_frequency`` steps and at the end of `fit`) hold the zeros.

    Args:
        model: a built Keras model (Keras 3 or tf_keras).
        layer_types: names of the layer types whose kernels are masked,
            default `deephoyer_tf.structure.registry.default_types()`
            (``Dense``, ``Conv1D/2D/3D`` and registered custom layers).

    Returns:
        `model` itself.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: a layer is not built, or `layer_types` names an
            unsupported type.

    Example::

        deephoyer_tf.prune(model, std_ratio=0.5)
        deephoyer_tf.fix_zeros(model)
        model.fit(x, y, epochs=2)            # zeros stay exactly zero
        deephoyer_tf.strip_zero_masks(model)
    """
    flavours.check_model(model)
    return zero_mask.hold_zeros(model, layer_types)


def fix_zeros_tfmot(
    model: ModelLike, *, layer_types: Sequence[str] | str | None = None
) -> ModelLike:
    """A TFMOT-wrapped copy of a tf_keras `model` whose zeros stay exactly zero.

    Returns a new, uncompiled model whose layers of `layer_types` are wrapped
    in TFMOT's `PruneLowMagnitude` (they are the same layer objects: the new
    model shares its weights with `model`), with masks frozen to the current
    nonzero pattern by `FrozenZerosSchedule`. Compile it and train with the
    callback ``tfmot.sparsity.keras.UpdatePruningStep()`` as TFMOT requires;
    `strip_zero_masks` (or TFMOT's `strip_pruning`) gives the plain model
    back; save/load under ``tfmot.sparsity.keras.prune_scope()``. Unlike TFMOT
    alone, zeros hold after every optimizer step (the kernels also get the
    masking constraint, built on TFMOT's mask variable), so no checkpoint
    written mid-epoch is dense. TFMOT is imported here only.

    Args:
        model: a built Sequential or functional tf_keras model.
        layer_types: as for `fix_zeros`.

    Raises:
        TypeError: `model` is not a tf_keras model (TFMOT 0.8 accepts only
            tf_keras models).
        ValueError: as for `fix_zeros`, or `model` is subclassed.
    """
    backend.require_tensorflow("deephoyer_tf.fix_zeros_tfmot (TFMOT, tf_keras)")
    flavours.check_model(model)
    if not flavours.is_tf_keras(model):
        raise TypeError(
            "Invalid type for argument `model`. Expected a tf_keras model: TFMOT "
            "0.8 wraps tf_keras (Keras 2) models only. Received: a Keras 3 model "
            f"{model.name!r} of type {type(model).__name__}. Use "
            "deephoyer_tf.fix_zeros(model), which works in place in both flavours."
        )
    from deephoyer_tf.sparsity import tfmot_wrapper  # imports TFMOT: tf_keras path only

    return tfmot_wrapper.wrap(model, registry.check_layer_types(layer_types))


def strip_zero_masks(model: ModelLike) -> ModelLike:
    """Returns the plain model behind `fix_zeros` or `fix_zeros_tfmot`, same weights.

    Removes the masking constraints (restoring each kernel's own constraint)
    and, for a TFMOT-wrapped tf_keras model, the `PruneLowMagnitude` wrappers
    (with ``tfmot.sparsity.keras.strip_pruning``). The result has the same
    layer types as the original model, no extra variables, and gives the same
    outputs as the masked model; it is ready to save or export.

    Args:
        model: a model given to `fix_zeros` (or held by `ThresholdPruning`), or
            returned by `fix_zeros_tfmot`; a model without masks is returned
            unchanged.

    Returns:
        `model` itself, in place; for a model with TFMOT wrappers, a new
        model sharing the layers.

    Raises:
        TypeError: `model` is not a Keras model.

    Example::

        plain = deephoyer_tf.strip_zero_masks(model)
        plain.save("sparse.keras")
    """
    flavours.check_model(model)
    zero_mask.release_zeros(model)
    if flavours.is_tf_keras(model) and any(
        registry.is_tfmot_wrapper(layer) for layer in flavours.flat_layers(model)
    ):
        from deephoyer_tf.sparsity import tfmot_wrapper

        return tfmot_wrapper.strip(model)
    return model


class _FrozenZerosScheduleLoader:
    """Stands for `FrozenZerosSchedule` in tf_keras' registry until TFMOT loads.

    Loading a model wrapped by `fix_zeros_tfmot` deserializes its schedule by
    class name; this stand-in, registered when tf_keras is imported, imports
    the real class (and TFMOT, already imported by then: it is TFMOT's wrapper
    that asks).
    """

    @classmethod
    def from_config(cls, config):
        from deephoyer_tf.sparsity import tfmot_wrapper

        return tfmot_wrapper.FrozenZerosSchedule.from_config(config)


def _register_schedule_loader(tf_keras):
    tf_keras.utils.get_custom_objects().setdefault(
        "FrozenZerosSchedule", _FrozenZerosScheduleLoader
    )


tf_keras_faces.on_tf_keras(_register_schedule_loader)
