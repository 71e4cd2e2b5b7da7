"""Magnitude pruning: schedules and the masks of the smallest weights, blocks or N:M groups.

* `schedules`: `ConstantSparsity`, `PolynomialDecay` (TFMOT's semantics) and
  their base `PruningSchedule`.
* `magnitude`: the magnitude masks (per layer or global; single weights,
  1xc blocks or N:M groups), `prune_magnitude` (one shot).

The callback that runs them during `fit` is
`deephoyer_tf.callbacks.MagnitudePruning`; the patterns themselves
(blocks, N:M) are defined in `deephoyer_tf.structure.patterns`.
"""

from deephoyer_tf.pruning.magnitude import prune_magnitude
from deephoyer_tf.pruning.schedules import ConstantSparsity
from deephoyer_tf.pruning.schedules import PolynomialDecay
from deephoyer_tf.pruning.schedules import PruningSchedule

__all__ = ["ConstantSparsity", "PolynomialDecay", "PruningSchedule", "prune_magnitude"]
