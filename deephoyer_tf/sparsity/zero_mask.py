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
layer weight: the model's weights, configs and checkpoints are unchanged, and
since the mask is the zero pattern of the weights, it can always be
recomputed from them.

On JAX the optimizer applies constraints in its own stateless step, where a
mask is read as the constant it was when the train step was traced; every
function here that changes a mask (`hold_zeros`, `release_zeros`,
`refresh_masks` through `retrace_after_refresh`) makes `fit` retrace.

`hold_zeros` attaches (or refreshes) the masks, `release_zeros` removes them;
`deephoyer_tf.fix_zeros` and `ThresholdPruning` are built on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import keras
import numpy as np
from keras import ops

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import private_api
from deephoyer_tf.sparsity import kernels as kernels_lib
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable

    # A kernel value: a tensor, a variable (either Keras flavour) or an array.
    TensorLike = Any


class ZeroMask:
    """The constraint ``w -> where(mask, previous(w), 0)`` that keeps zeros at zero.

    Not serialized (layer configs keep their own ``kernel_constraint``); it
    lives on the variable only, for the optimizer.

    Attributes:
        mask: a non-trainable variable of the kernel's shape (`tf.Variable`
            on TensorFlow, `keras.Variable` elsewhere), 1 where the weight is
            free, 0 where it is held at zero.
        previous: the constraint the variable had before, applied first, or None.
    """

    def __init__(
        self, mask: Any, previous: Callable[[Any], TensorLike] | None = None
    ) -> None:
        self.mask = mask
        self.previous = previous

    def __call__(self, w: TensorLike) -> Any:
        if self.previous is not None:
            w = self.previous(w)
        w = backend.to_tensor(w)
        # A select, not `w * mask`: a diverged weight (inf) elsewhere in the
        # kernel must not turn a held zero into inf * 0 = NaN.
        mask = backend.to_tensor(self.mask)
        return ops.where(ops.not_equal(mask, 0), w, ops.zeros_like(w))

    def __repr__(self) -> str:
        return f"ZeroMask(shape={tuple(self.mask.shape)}, previous={self.previous!r})"


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
    if isinstance(constraint, ZeroMask):
        masks.append(constraint.mask)
    tfmot_mask = ref.tfmot_mask()
    if tfmot_mask is not None and all(m is not tfmot_mask for m in masks):
        masks.append(tfmot_mask)
    for mask in masks:
        mask.assign(backend.to_tensor(mask) * _nonzero(ref.variable, mask.dtype))
    return bool(masks)


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
            constraint = ref.variable.constraint
            if not isinstance(constraint, ZeroMask):
                mask = ref.tfmot_mask()
                if mask is None:
                    mask = _new_mask(ref.variable)
                private_api.set_variable_constraint(ref.variable, ZeroMask(mask, constraint))
            refresh_masks(ref)
            tfmot_mask = ref.tfmot_mask()
            if tfmot_mask is not None:
                # A TFMOT mask (loaded from a file, say) may hold zeros the
                # weights do not have yet. A select, not `w * mask`: an inf
                # weight at a masked position must become 0, not NaN.
                w = backend.to_tensor(ref.variable)
                keep = ops.not_equal(backend.to_tensor(tfmot_mask), 0)
                ref.variable.assign(ops.where(keep, w, ops.zeros_like(w)))
    kernels_lib.retrace(model)
    return model


def release_zeros(model):
    """Removes every `ZeroMask` from the kernels of `model`, in place.

    Restores each kernel's previous constraint. Returns the number removed.
    """
    count = 0
    for ref in kernels_lib.model_kernels(model, registry.supported_types()):
        constraint = ref.variable.constraint
        if isinstance(constraint, ZeroMask):
            private_api.set_variable_constraint(ref.variable, constraint.previous)
            count += 1
    kernels_lib.retrace(model)
    return count


def is_fixed(variable):
    """True when `variable` carries a `ZeroMask` constraint."""
    return isinstance(variable.constraint, ZeroMask)


def mask_of(variable):
    """The 0/1 mask (NumPy) held on `variable`, or None."""
    constraint = variable.constraint
    if not isinstance(constraint, ZeroMask):
        return None
    return np.asarray(ops.convert_to_numpy(backend.to_tensor(constraint.mask)))


