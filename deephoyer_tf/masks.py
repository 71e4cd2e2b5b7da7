"""Zeros held fixed while fine-tuning: `fix_zeros` and `strip_zero_masks`.

The third stage of DeepHoyer (paper, section 4.3): after thresholding, the
model is fine-tuned with every zero weight kept at exactly zero.

Mechanism. Every Keras optimizer (Keras 3 and tf_keras) applies
``variable.constraint`` to each trainable variable right after updating it,
inside the compiled train step. `fix_zeros` gives each kernel a constraint
``w -> c(w) * mask`` (``c``: the kernel's own constraint, if any), with ``mask``
the 0/1 pattern of the nonzero weights held in a non-trainable `tf.Variable`.
So, whatever the optimizer (momentum, Adam, decoupled weight decay), a zero
weight is exactly zero after every optimizer step: in any checkpoint, any
callback, any `BackupAndRestore` backup. The mask is not a layer weight: the
model's weights, configs and checkpoints are unchanged, and since the mask is
the zero pattern of the weights, it can always be recomputed from them (call
`fix_zeros` again on a model restored from a checkpoint).

Flavours.

* Keras 3: `fix_zeros` attaches the masks in place and returns the same model,
  still compiled (fit can go on with the same optimizer state).
* tf_keras: `fix_zeros` returns a new model in which the layers are wrapped in
  TFMOT's `PruneLowMagnitude` with masks frozen to the current nonzero pattern
  (`FrozenZerosSchedule` never recomputes them), so the TFMOT workflow applies:
  `tfmot.sparsity.keras.UpdatePruningStep` (required by TFMOT during `fit`),
  `strip_pruning`, loading under `prune_scope`, pruning-preserving
  quantization. The wrapped kernels also get the masking constraint (using
  TFMOT's own mask variable), so that zeros hold after every optimizer step,
  not only at the next forward pass as with TFMOT alone.
"""

import importlib.util

import numpy as np
import tensorflow as tf

from deephoyer_tf import _kernels
from deephoyer_tf import _layers
from deephoyer_tf import _models


class ZeroMask:
    """The constraint ``w -> where(mask, previous(w), 0)`` that keeps zeros at zero.

    Not serialized (layer configs keep their own ``kernel_constraint``); it
    lives on the variable only, for the optimizer.

    Attributes:
        mask: a non-trainable `tf.Variable` of the kernel's shape, 1 where the
            weight is free, 0 where it is held at zero.
        previous: the constraint the variable had before, applied first, or None.
    """

    def __init__(self, mask, previous=None):
        self.mask = mask
        self.previous = previous

    def __call__(self, w):
        if self.previous is not None:
            w = self.previous(w)
        w = tf.convert_to_tensor(w)
        # A select, not `w * mask`: a diverged weight (inf) elsewhere in the
        # kernel must not turn a held zero into inf * 0 = NaN.
        return tf.where(tf.not_equal(self.mask, 0), w, tf.zeros_like(w))

    def __repr__(self):
        return f"ZeroMask(shape={tuple(self.mask.shape)}, previous={self.previous!r})"


def _nonzero(variable, dtype):
    return tf.cast(tf.not_equal(tf.convert_to_tensor(variable), 0), dtype)


def refresh_masks(ref):
    """Clears the mask entries of the zeros of `ref.variable` (after pruning).

    Updates the `ZeroMask` of the kernel and the TFMOT mask of its wrapper, if
    any, to ``mask * (w != 0)``, so new zeros are held as well.
    """
    masks = []
    constraint = ref.variable.constraint
    if isinstance(constraint, ZeroMask):
        masks.append(constraint.mask)
    tfmot_mask = ref.tfmot_mask()
    if tfmot_mask is not None and all(m is not tfmot_mask for m in masks):
        masks.append(tfmot_mask)
    for mask in masks:
        mask.assign(mask * _nonzero(ref.variable, mask.dtype))


def hold_zeros(model, layer_types=None):
    """Attaches (or refreshes) the masking constraints in place; returns `model`.

    The flavour-neutral mechanism behind `fix_zeros` on Keras 3 and
    `ThresholdPruning` on both flavours. A kernel that already has a `ZeroMask`
    gets its mask refreshed (``mask * (w != 0)``), never a second one; a kernel
    inside a TFMOT wrapper is masked with the wrapper's own mask variable (set
    to ``mask * (w != 0)`` first). The next `fit` step retraces.
    """
    types = _kernels.check_layer_types(layer_types)
    refs = _kernels.model_kernels(model, types)
    with _kernels.strategy_scope(model):
        for ref in refs:
            constraint = ref.variable.constraint
            if not isinstance(constraint, ZeroMask):
                mask = ref.tfmot_mask()
                if mask is None:
                    mask = tf.Variable(
                        _nonzero(ref.variable, ref.variable.dtype),
                        trainable=False,
                        name="zero_mask",
                    )
                _kernels.set_constraint(ref.variable, ZeroMask(mask, constraint))
            refresh_masks(ref)
            tfmot_mask = ref.tfmot_mask()
            if tfmot_mask is not None:
                # A TFMOT mask (loaded from a file, say) may hold zeros the
                # weights do not have yet.
                ref.variable.assign(
                    tf.convert_to_tensor(ref.variable) * tf.cast(tfmot_mask, ref.variable.dtype)
                )
    _kernels.retrace(model)
    return model


def release_zeros(model):
    """Removes every `ZeroMask` from the kernels of `model`, in place.

    Restores each kernel's previous constraint. Returns the number removed.
    """
    count = 0
    for ref in _kernels.model_kernels(model, _layers.supported_types()):
        constraint = ref.variable.constraint
        if isinstance(constraint, ZeroMask):
            _kernels.set_constraint(ref.variable, constraint.previous)
            count += 1
    _kernels.retrace(model)
    return count


def fix_zeros(model, *, layer_types=None):
    """Holds every zero kernel weight of `model` at exactly zero from now on.

    After ``model = fix_zeros(model)``, each kernel weight that is 0 now stays
    0 through any number of training steps with any optimizer (SGD with
    momentum, Adam, AdamW's decoupled weight decay...): it is re-zeroed inside
    the compiled train step right after every optimizer update, as the kernel's
    constraint ``w -> c(w) * mask``, ``mask = (w != 0)`` taken now (``c``: the
    kernel's own constraint, if any, applied first). Costs one multiply per
    kernel weight per step.

    Keras 3: modifies `model` in place and returns it, still compiled, so
    `fit` can continue with the same optimizer state; the next `fit` retraces
    its train step. The model's weights, configs and checkpoints are unchanged
    (the masks are not layer weights), so checkpoints stay loadable into a plain
    model; after restoring one, call `fix_zeros` again: the mask is the zero
    pattern of the weights. Calling it on a model already fixed refreshes the
    masks (zeros made since are held too).

    tf_keras: returns a new, uncompiled model whose layers of `layer_types`
    are wrapped in TFMOT's `PruneLowMagnitude` (they are the same layer
    objects: the new model shares its weights with `model`), with masks frozen
    to the current nonzero pattern by `FrozenZerosSchedule`. Compile it and
    train with the callback ``tfmot.sparsity.keras.UpdatePruningStep()`` as
    TFMOT requires; `strip_zero_masks` (or TFMOT's `strip_pruning`) gives the
    plain model back; save/load under ``tfmot.sparsity.keras.prune_scope()``.
    Unlike TFMOT alone, zeros hold after every optimizer step (the kernels also
    get the masking constraint, built on TFMOT's mask variable), so no
    checkpoint written mid-epoch is dense. TFMOT is imported here only.

    Limitation: an optimizer with ``use_ema=True`` overwrites the weights with
    their moving averages at the end of `fit` (`finalize_variable_values`),
    outside any constraint; those averages are not masked.

    Args:
        model: a built Keras model (Keras 3 or tf_keras; Sequential or
            functional for tf_keras).
        layer_types: names of the layer types whose kernels are masked,
            default ``("Dense", "Conv1D", "Conv2D", "Conv3D")``.

    Returns:
        Keras 3: `model` itself. tf_keras: the TFMOT-wrapped model.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: a layer is not built, or `layer_types` names an
            unsupported type.

    Example::

        deephoyer_tf.prune(model, std_ratio=0.5)
        model = deephoyer_tf.fix_zeros(model)
        model.fit(x, y, epochs=2)            # zeros stay exactly zero
        plain = deephoyer_tf.strip_zero_masks(model)
    """
    _models.check_model(model)
    if _models.is_tf_keras(model):
        from deephoyer_tf import _tfmot  # imports TFMOT: tf_keras path only

        return _tfmot.wrap(model, _kernels.check_layer_types(layer_types))
    return hold_zeros(model, layer_types)


def strip_zero_masks(model):
    """Returns the plain model behind `fix_zeros`, with the same weights.

    Removes the masking constraints (restoring each kernel's own constraint)
    and, for a TFMOT-wrapped tf_keras model, the `PruneLowMagnitude` wrappers
    (with ``tfmot.sparsity.keras.strip_pruning``). The result has the same
    layer types as the original model, no extra variables, and gives the same
    outputs as the masked model; it is ready to save or export.

    Args:
        model: a model returned by `fix_zeros` (or held by `ThresholdPruning`);
            a model without masks is returned unchanged.

    Returns:
        Keras 3, or tf_keras without wrappers: `model` itself, in place.
        tf_keras with TFMOT wrappers: a new model sharing the layers.

    Raises:
        TypeError: `model` is not a Keras model.

    Example::

        plain = deephoyer_tf.strip_zero_masks(deephoyer_tf.fix_zeros(model))
        plain.save("sparse.keras")
    """
    _models.check_model(model)
    release_zeros(model)
    if _models.is_tf_keras(model) and any(
        _kernels.is_tfmot_wrapper(layer) for layer in _models.flat_layers(model)
    ):
        from deephoyer_tf import _tfmot

        return _tfmot.strip(model)
    return model


def is_fixed(variable):
    """True when `variable` carries a `ZeroMask` constraint."""
    return isinstance(variable.constraint, ZeroMask)


def mask_of(variable):
    """The 0/1 mask (NumPy) held on `variable`, or None."""
    constraint = variable.constraint
    if not isinstance(constraint, ZeroMask):
        return None
    return np.asarray(tf.convert_to_tensor(constraint.mask))


class _FrozenZerosScheduleLoader:
    """Stands for `FrozenZerosSchedule` in tf_keras' registry until TFMOT loads.

    Loading a model wrapped by `fix_zeros` deserializes its schedule by class
    name; this stub, registered at ``import deephoyer_tf``, imports the real
    class (and TFMOT, already imported by then: it is TFMOT's wrapper that asks).
    """

    @classmethod
    def from_config(cls, config):
        from deephoyer_tf import _tfmot

        return _tfmot.FrozenZerosSchedule.from_config(config)


def _register_schedule_loader():
    if importlib.util.find_spec("tf_keras") is None:
        return
    import tf_keras

    tf_keras.utils.get_custom_objects().setdefault(
        "FrozenZerosSchedule", _FrozenZerosScheduleLoader
    )


_register_schedule_loader()
