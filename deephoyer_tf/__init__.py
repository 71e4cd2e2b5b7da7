"""deephoyer_tf: DeepHoyer sparsity regularizers and pruning for Keras and TensorFlow.

Yang, Wen, Li. "DeepHoyer: Learning Sparser Neural Network with Differentiable
Scale-Invariant Sparsity Measures." ICLR 2020.

Importing this package never imports `tensorflow_model_optimization` and never
sets `TF_USE_LEGACY_KERAS`.
"""

from deephoyer_tf import datasets
from deephoyer_tf import models
from deephoyer_tf._layers import supported_types as supported_layer_types
from deephoyer_tf.attach import regularize
from deephoyer_tf.layers import GatherUnits
from deephoyer_tf.callbacks import ThresholdPruning
from deephoyer_tf.distributed import fit_custom
from deephoyer_tf.distributed import make_train_step
from deephoyer_tf.export import export_tflite
from deephoyer_tf.masks import fix_zeros
from deephoyer_tf.masks import strip_zero_masks
from deephoyer_tf.pruning import prune
from deephoyer_tf.regularizers import DeepHoyerRegularizer
from deephoyer_tf.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers import GroupLasso
from deephoyer_tf.regularizers import Hoyer
from deephoyer_tf.regularizers import HoyerSquare
from deephoyer_tf.regularizers import strength_variables
from deephoyer_tf.report import SparsityReport
from deephoyer_tf.report import sparsity_report
from deephoyer_tf.schedules import StrengthSchedule
from deephoyer_tf.summaries import SparsitySummaries
from deephoyer_tf.surgery import ShrinkSummary
from deephoyer_tf.surgery import shrink

__version__ = "0.1.0"

__all__ = [
    "DeepHoyerRegularizer",
    "GatherUnits",
    "GroupHoyerSquare",
    "GroupLasso",
    "Hoyer",
    "HoyerSquare",
    "ShrinkSummary",
    "SparsityReport",
    "SparsitySummaries",
    "StrengthSchedule",
    "ThresholdPruning",
    "export_tflite",
    "fit_custom",
    "fix_zeros",
    "make_train_step",
    "prune",
    "regularize",
    "shrink",
    "sparsity_report",
    "strength_variables",
    "strip_zero_masks",
    "supported_layer_types",
]
