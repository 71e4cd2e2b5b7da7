"""deephoyer_tf: DeepHoyer sparsity regularizers and pruning for Keras and TensorFlow.

Yang, Wen, Li. "DeepHoyer: Learning Sparser Neural Network with Differentiable
Scale-Invariant Sparsity Measures." ICLR 2020.

The public names are re-exported here; the design is in the subpackages
(see docs/ARCHITECTURE.md):

* `regularizers`: the measures, the regularizer classes, `regularize`;
* `sparsity`: `prune`, `fix_zeros` / `strip_zero_masks`, the TFMOT wrapper;
* `pruning`: magnitude pruning (`ConstantSparsity`, `PolynomialDecay`,
  `prune_magnitude`; the callback `MagnitudePruning`);
* `callbacks`: `ThresholdPruning`, `StrengthSchedule`, `SparsitySummaries`;
* `structure`: the layer registry, liveness, `sparsity_report`, `shrink`;
* `export`: TFLite / LiteRT export and latency;
* `training`: `fit_custom` for Keras 3 on any `tf.distribute` strategy;
* `paper`: the LeNets, MNIST, the reproduction and the figures;
* `search`: the Optuna search for the sparsest model within an accuracy drop
  (imported on first use of ``deephoyer_tf.search``).

Importing this package imports neither tf_keras nor
`tensorflow_model_optimization`, and never sets `TF_USE_LEGACY_KERAS`.
"""

# First: in the ``deephoyer-tf`` process, TensorFlow is imported with its start-up logs
# silenced (`_internal.quiet`); from Python, this import changes nothing.
from deephoyer_tf._internal import quiet as _quiet  # noqa: F401 - before TensorFlow
from deephoyer_tf._internal import tf_keras_faces as _tf_keras_faces
from deephoyer_tf._internal.backend import BackendError
from deephoyer_tf._internal.loading import UnsafeModelError
from deephoyer_tf._internal.loading import load_model
from deephoyer_tf._version import __version__
from deephoyer_tf.callbacks import MagnitudePruning
from deephoyer_tf.callbacks import SparsitySummaries
from deephoyer_tf.callbacks import StrengthSchedule
from deephoyer_tf.callbacks import ThresholdPruning
from deephoyer_tf.export import export_tflite
from deephoyer_tf.export import tflite_latency
from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import models
from deephoyer_tf.pruning import ConstantSparsity
from deephoyer_tf.pruning import PolynomialDecay
from deephoyer_tf.pruning import prune_magnitude
from deephoyer_tf.regularizers import DeepHoyerRegularizer
from deephoyer_tf.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers import GroupLasso
from deephoyer_tf.regularizers import HeadGroups
from deephoyer_tf.regularizers import Hoyer
from deephoyer_tf.regularizers import HoyerSquare
from deephoyer_tf.regularizers import UnitGroups
from deephoyer_tf.regularizers import regularize
from deephoyer_tf.regularizers import strength_variables
from deephoyer_tf.sparsity import fix_zeros
from deephoyer_tf.sparsity import fix_zeros_tfmot
from deephoyer_tf.sparsity import prune
from deephoyer_tf.sparsity import strip_zero_masks
from deephoyer_tf.structure import GatherUnits
from deephoyer_tf.structure import KernelSpec
from deephoyer_tf.structure import ShrinkSummary
from deephoyer_tf.structure import SparsityReport
from deephoyer_tf.structure import UnhandledLayerWarning
from deephoyer_tf.structure import pattern_summary
from deephoyer_tf.structure import register_layer
from deephoyer_tf.structure import shrink
from deephoyer_tf.structure import sparsity_report
from deephoyer_tf.structure import supported_types as supported_layer_types
from deephoyer_tf.structure import unregister_layer
from deephoyer_tf.training import fit_custom
from deephoyer_tf.training import make_train_step

# tf_keras faces: registered now if tf_keras is imported, else when it is.
_tf_keras_faces.install()


def __getattr__(name):
    # `deephoyer_tf.search` (the Optuna search) is imported on first use only.
    if name == "search":
        import importlib

        return importlib.import_module("deephoyer_tf.search")
    raise AttributeError(f"module 'deephoyer_tf' has no attribute {name!r}")

__all__ = [
    "BackendError",
    "ConstantSparsity",
    "DeepHoyerRegularizer",
    "GatherUnits",
    "GroupHoyerSquare",
    "GroupLasso",
    "HeadGroups",
    "Hoyer",
    "HoyerSquare",
    "KernelSpec",
    "MagnitudePruning",
    "PolynomialDecay",
    "ShrinkSummary",
    "SparsityReport",
    "SparsitySummaries",
    "StrengthSchedule",
    "ThresholdPruning",
    "UnhandledLayerWarning",
    "UnitGroups",
    "UnsafeModelError",
    "__version__",
    "datasets",
    "export_tflite",
    "fit_custom",
    "fix_zeros",
    "fix_zeros_tfmot",
    "load_model",
    "make_train_step",
    "models",
    "pattern_summary",
    "prune",
    "prune_magnitude",
    "register_layer",
    "regularize",
    "shrink",
    "sparsity_report",
    "strength_variables",
    "strip_zero_masks",
    "supported_layer_types",
    "tflite_latency",
    "unregister_layer",
]
