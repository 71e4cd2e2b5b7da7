"""Sparsity: thresholding (`prune`) and zeros held fixed while fine-tuning.

* `thresholding`: `prune`, every kernel weight below a threshold set to exactly zero.
* `zero_mask`: the `ZeroMask` constraint that keeps zeros at zero.
* `fixed_zeros`: `fix_zeros` (both flavours, in place), `fix_zeros_tfmot`
  (TFMOT's wrapper, tf_keras), `strip_zero_masks`.
* `tfmot_wrapper`: TFMOT's `PruneLowMagnitude` with frozen masks (imports
  TFMOT; loaded only by `fix_zeros_tfmot`).
* `kernels`: which kernels these act on.
"""

from deephoyer_tf.sparsity.fixed_zeros import fix_zeros
from deephoyer_tf.sparsity.fixed_zeros import fix_zeros_tfmot
from deephoyer_tf.sparsity.fixed_zeros import strip_zero_masks
from deephoyer_tf.sparsity.thresholding import prune
from deephoyer_tf.sparsity.zero_mask import ZeroMask

__all__ = ["ZeroMask", "fix_zeros", "fix_zeros_tfmot", "prune", "strip_zero_masks"]
