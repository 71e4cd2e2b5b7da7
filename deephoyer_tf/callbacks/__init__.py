"""Callbacks for Keras 3 and tf_keras `fit`.

* `ThresholdPruning`: the three DeepHoyer stages in one `fit`.
* `MagnitudePruning`: gradual magnitude pruning (weights, blocks, N:M) on a schedule.
* `StrengthSchedule`: warm up, anneal or switch off the penalties.
* `SparsitySummaries`: per-layer sparsity in TensorBoard.
"""

from deephoyer_tf.callbacks.magnitude_pruning import MagnitudePruning
from deephoyer_tf.callbacks.sparsity_summaries import SparsitySummaries
from deephoyer_tf.callbacks.strength_schedule import StrengthSchedule
from deephoyer_tf.callbacks.threshold_pruning import ThresholdPruning

__all__ = ["MagnitudePruning", "SparsitySummaries", "StrengthSchedule", "ThresholdPruning"]
