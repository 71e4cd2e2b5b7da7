"""The zero mask: the constraint that keeps a kernel's zeros at exactly zero.

Mechanism. Every Keras optimizer (Keras 3 and tf_keras) applies
``variable.constraint`` to each trainable variable right after updating it,
inside the compiled train step. A `ZeroMask` constraint is
``w -> where(mask, c(w), 0)`` (``c``: the kernel's own constraint, if any),
with ``mask`` the 0/1 pattern of the nonzero weights held in a non-trainable
variable (`tf.Variable` on TensorFlow, `keras.Variable` on JAX and PyTorch;
the select is `keras.ops.where`, so it runs on every backend). So, whatever the optimizer (momentum, Adam, decoupled weight
decay), a zero weight is exactly zero after every optimizer step: in any
checkpoint, any callback, any `BackupAndRestore` backup. The mask is not a
layer weight: the model's weights and checkpoints are unchanged, and since the
mask is the zero pattern of the weights, it can always be recomputed from them.

Saving. The `ZeroMask` is also the layer's constraint argument
(``kernel_constraint``...), so a saved (or cloned) model's config records that
its zeros were held; the mask itself is not saved. Such a model comes back
with a mask-less `ZeroMask`: `deephoyer_tf.load_model` (and `fix_zeros`) rebuild
the mask from the loaded kernel's zeros; loaded any other way, the first train
step raises instead of letting the zeros leak.

Moving averages. An optimizer with ``use_ema=True`` keeps a moving average of
each variable and writes it over the variable (every
``ema_overwrite_frequency`` steps, and at the end of `fit`). Keras 3 updates
the averages before it applies the constraints, so a `ZeroMask` also zeros the
held entries of its kernel's average (that of the model's optimizer,
``model.optimizer``): the averages of held weights stay exactly 0.

On JAX the optimizer applies constraints in its own stateless step, where a
mask is read as the constant it was when the train step was traced; every
function here that changes a mask (`hold_zeros`, `release_zeros`,
`refresh_masks` through `retrace_after_refresh`) makes `fit` retrace.

`hold_zeros` attaches (or refreshes) the masks, `release_zeros` removes them;
`deephoyer_tf.fix_zeros` and `ThresholdPruning` are built on them.
"""

from __future__ import annotations

import weakref
from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import loading
from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import tf_keras_faces
from deephoyer_tf.sparsity import kernels as kernels_lib
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable

    # A kernel value: a tensor, a variable (either Keras flavour) or an array.
    TensorLike = Any


_PACKAGE = "deephoyer_tf"


@keras.saving.register_keras_serializable(package=_PACKAGE)
class ZeroMask(keras.constraints.Constraint):
    """The constraint ``w -> where(mask, previous(w), 0)`` that keeps zeros at zero.

    Serialized as the layer's constraint argument without its mask: a loaded
    or cloned `ZeroMask` has ``mask=None`` until `fix_zeros` (or
    `deephoyer_tf.load_model`) rebuilds it from the kernel's zeros, and
    raises if a train step calls it before.

    Attributes:
        mask: a non-trainable variable of the kernel's shape (`tf.Variable`
            on TensorFlow, `keras.Variable` elsewhere), 1 where the weight is
            free, 0 where it is held at zero; None when loaded.
        previous: the constraint the variable had before, applied first, or None.
    """

    def __init__(
        self, mask: Any = None, previous: Callable[[Any], TensorLike] | None = None
    ) -> None:
        self.mask = mask
        self.previous = previous
        self._ema_refs = (None, None)  # weak references (model, kernel), set by `hold_zeros`

    def __call__(self, w: TensorLike) -> Any:
        if self.mask is None:
            raise ValueError(
                "This kernel's zeros were held by deephoyer_tf.fix_zeros in the model it was "
                "loaded or cloned from, but masks are not saved: its zeros would leak. Call "
                "deephoyer_tf.fix_zeros(model) before training (deephoyer_tf.load_model does it "
                "when loading), or deephoyer_tf.strip_zero_masks(model) to train freely."
            )
        if self.previous is not None:
            w = self.previous(w)
        w = backend.to_tensor(w)
        # A select, not `w * mask`: a diverged weight (inf) elsewhere in the
        # kernel must not turn a held zero into inf * 0 = NaN.
        keep = ops.not_equal(backend.to_tensor(self.mask), 0)
        average = self._ema_average()
        if average is not None:
            value = backend.to_tensor(private_api.current_value(average))
            average.assign(ops.where(keep, value, ops.zeros_like(value)))
        return ops.where(keep, w, ops.zeros_like(w))

    def set_ema_targets(self, model, variable):
        """Remembers (weakly) the model whose optimizer's moving average of `variable` is masked too."""
        self._ema_refs = (weakref.ref(model), weakref.ref(variable))

    def ema_targets(self):
        """``(model, kernel)`` set by `set_ema_targets`, each None if unset or gone."""
        return tuple(ref() if ref is not None else None for ref in self._ema_refs)

    def _ema_average(self):
        """The moving average the model's optimizer keeps of the kernel (``use_ema=True``), or None."""
        model, variable = self.ema_targets()
        optimizer = _optimizer(model)
        if optimizer is None or not getattr(optimizer, "use_ema", False) or variable is None:
            return None
        average = private_api.ema_average(optimizer, variable)
        if average is None:
            raise ValueError(
                f"deephoyer_tf.fix_zeros cannot hold the zeros of {variable.name!r} in the moving "
                f"averages of optimizer {type(optimizer).__name__} (use_ema=True): it keeps none "
                "for this kernel, and would write unmasked averages over the weights. Use an "
                "optimizer with use_ema=False, or call fix_zeros after compiling with it."
            )
        return average

    def get_config(self) -> dict:
        previous = self.previous
        if previous is None:
            return {"previous": None, "flavour": None}
        flavour = "tf_keras" if type(previous).__module__.startswith("tf_keras") else "keras"
        module = _keras_module(flavour)
        return {"previous": module.constraints.serialize(previous), "flavour": flavour}

    @classmethod
    def from_config(cls, config: dict) -> ZeroMask:
        previous = config.get("previous")
        if previous is not None:
            previous = _keras_module(config.get("flavour") or "keras").constraints.deserialize(previous)
        return cls(None, previous)

    def __repr__(self) -> str:
        shape = None if self.mask is None else tuple(self.mask.shape)
        return f"ZeroMask(shape={shape}, previous={self.previous!r})"


def _keras_module(flavour):
    if flavour == "tf_keras":
        import tf_keras

        return tf_keras
    return keras


def _optimizer(model):
    optimizer = getattr(model, "optimizer", None)
    # A LossScaleOptimizer (either flavour) keeps the averages in its inner optimizer.
    return getattr(optimizer, "inner_optimizer", optimizer)


def _register_with_tf_keras(tf_keras):
    # tf_keras' `constraints.serialize` warns about other classes: its Constraint becomes a second base.
    base = tf_keras.constraints.Constraint
    if base not in ZeroMask.__mro__:
        ZeroMask.__bases__ = ZeroMask.__bases__ + (base,)
    tf_keras.utils.register_keras_serializable(package=_PACKAGE)(ZeroMask)
    # tf_keras' `.h5` loader looks nested objects up by their bare class name.
    tf_keras.utils.get_custom_objects().setdefault("ZeroMask", ZeroMask)


tf_keras_faces.on_tf_keras(_register_with_tf_keras)


def _nonzero(variable, dtype):
    return ops.cast(ops.not_equal(backend.to_tensor(variable), 0), dtype)


def _new_mask(variable):
    """The mask variable of `variable`: 1 where it is nonzero."""
    value = _nonzero(variable, variable.dtype)
    if backend.is_tensorflow():
        import tensorflow as tf

        return tf.Variable(value, trainable=False, name="zero_mask")
    return keras.Variable(value, dtype=variable.dtype, trainable=False, name="zero_mask")


def refresh_masks(ref):
    """Clears the mask entries of the zeros of `ref.variable` (after pruning).

    Updates the `ZeroMask` of the kernel and the TFMOT mask of its wrapper, if
    any, to ``mask * (w != 0)``, so new zeros are held as well.
    """
    masks = []
    constraint = ref.variable.constraint
    if isinstance(constraint, ZeroMask) and constraint.mask is not None:
        masks.append(constraint.mask)
    tfmot_mask = ref.tfmot_mask()
    if tfmot_mask is not None and all(m is not tfmot_mask for m in masks):
        masks.append(tfmot_mask)
    for mask in masks:
        mask.assign(backend.to_tensor(mask) * _nonzero(ref.variable, mask.dtype))
    if isinstance(constraint, ZeroMask) and constraint.mask is not None:
        _mask_average(constraint)
    return bool(masks)


def _mask_average(constraint):
    """Zeros the held entries of the kernel's moving average now, if the optimizer keeps one."""
    model, variable = constraint.ema_targets()
    optimizer = _optimizer(model)
    if optimizer is None or variable is None:
        return
    average = private_api.ema_average(optimizer, variable)
    if average is not None:
        value = backend.to_tensor(average)
        keep = ops.not_equal(backend.to_tensor(constraint.mask), 0)
        average.assign(ops.where(keep, value, ops.zeros_like(value)))


def _constraint_attribute(ref):
    """The layer attribute of the kernel's constraint argument (``kernel_constraint``...), or None.

    Named after the kernel's regularizer attribute, as Keras names both
    (``depthwise_regularizer`` / ``depthwise_constraint``).
    """
    for spec, variable in registry.kernels(ref.layer):
        if variable is ref.variable:
            name = spec.regularizer_attribute.replace("_regularizer", "_constraint")
            if name != spec.regularizer_attribute and hasattr(ref.layer, name):
                return name
    return None


def retrace_after_refresh(model, refreshed):
    """After `refresh_masks` changed masks (`refreshed`): retrace where masks are frozen.

    TensorFlow reads the mask variables at every step and PyTorch runs
    eagerly; JAX froze them into the traced step.
    """
    if refreshed and not backend.is_tensorflow():
        kernels_lib.retrace(model)


def hold_zeros(model, layer_types=None):
    """Attaches (or refreshes) the masking constraints in place; returns `model`.

    The flavour-neutral mechanism behind `fix_zeros` and `ThresholdPruning`. A kernel that already has a `ZeroMask`
    gets its mask refreshed (``mask * (w != 0)``), never a second one; a kernel
    inside a TFMOT wrapper is masked with the wrapper's own mask variable (set
    to ``mask * (w != 0)`` first). The next `fit` step retraces.
    """
    types = registry.check_layer_types(layer_types)
    refs = kernels_lib.model_kernels(model, types)
    with kernels_lib.strategy_scope(model):
        for ref in refs:
            _hold(model, ref)
    kernels_lib.retrace(model)
    return model


def restore_held_zeros(model):
    """Rebuilds the masks of a loaded model whose config says its zeros were held; returns it.

    Kernels with a mask-less `ZeroMask` (see the module docstring) get their
    mask from their zeros now; other kernels are left alone. Called by
    `deephoyer_tf.load_model` on every model it loads.
    """
    try:
        refs = kernels_lib.model_kernels(model, registry.supported_types())
    except ValueError:  # an unbuilt layer: nothing was loaded into it
        return model
    pending = [ref for ref in refs
               if isinstance(ref.variable.constraint, ZeroMask) and ref.variable.constraint.mask is None]
    if pending:
        with kernels_lib.strategy_scope(model):
            for ref in pending:
                _hold(model, ref)
        kernels_lib.retrace(model)
    return model


loading.after_load(restore_held_zeros)


def _hold(model, ref):
    """Puts (or refreshes) the `ZeroMask` of one kernel."""
    constraint = ref.variable.constraint
    if not isinstance(constraint, ZeroMask) or constraint.mask is None:
        # A mask-less ZeroMask (a loaded or cloned model): rebuilt from the zeros.
        previous = constraint.previous if isinstance(constraint, ZeroMask) else constraint
        mask = ref.tfmot_mask()
        if mask is None:
            mask = _new_mask(ref.variable)
        constraint = ZeroMask(mask, previous)
        private_api.set_variable_constraint(ref.variable, constraint)
    constraint.set_ema_targets(model, ref.variable)
    attribute = _constraint_attribute(ref)
    if attribute is not None:
        # Recorded in the layer's config: a saved model knows its zeros were held.
        setattr(ref.layer, attribute, constraint)
    refresh_masks(ref)
    tfmot_mask = ref.tfmot_mask()
    if tfmot_mask is not None:
        # A TFMOT mask (loaded from a file, say) may hold zeros the
        # weights do not have yet. A select, not `w * mask`: an inf
        # weight at a masked position must become 0, not NaN.
        w = backend.to_tensor(ref.variable)
        keep = ops.not_equal(backend.to_tensor(tfmot_mask), 0)
        ref.variable.assign(ops.where(keep, w, ops.zeros_like(w)))


def release_zeros(model):
    """Removes every `ZeroMask` from the kernels of `model`, in place.

    Restores each kernel's previous constraint. Returns the number removed.
    """
    count = 0
    for ref in kernels_lib.model_kernels(model, registry.supported_types()):
        constraint = ref.variable.constraint
        if isinstance(constraint, ZeroMask):
            private_api.set_variable_constraint(ref.variable, constraint.previous)
            attribute = _constraint_attribute(ref)
            if attribute is not None and isinstance(getattr(ref.layer, attribute), ZeroMask):
                setattr(ref.layer, attribute, constraint.previous)
            count += 1
    kernels_lib.retrace(model)
    return count


def is_fixed(variable):
    """True when `variable` carries a `ZeroMask` constraint with its mask."""
    return isinstance(variable.constraint, ZeroMask) and variable.constraint.mask is not None


def mask_of(variable):
    """The 0/1 mask (NumPy) held on `variable`, or None."""
    constraint = variable.constraint
    if not isinstance(constraint, ZeroMask) or constraint.mask is None:
        return None
    return np.asarray(ops.convert_to_numpy(backend.to_tensor(constraint.mask)))


