"""Structure: the layer registry, graph reading, liveness, `sparsity_report` and `shrink`.

* `registry`: what deephoyer_tf knows about each layer class (public:
  `register_layer`, `KernelSpec`); `builtin_layers`: Keras' own layers.
* `graph`: a model flattened into ops over tensors.
* `liveness`: which units are live, what must be kept together.
* `report`: `sparsity_report`, the paper's counts (nonzeros, live units, MACs).
* `surgery`: `shrink` (with `cutters`, one per layer kind, and `gather_units`): dead
  units physically removed.
* `patterns`: 1xc blocks and N:M groups of a kernel, `pattern_summary`.
* `attention`: `EinsumDense` equations and `MultiHeadAttention`: their kernels,
  live heads, attention MACs, and how `shrink` removes dead heads.
"""

from deephoyer_tf._internal import loading as _loading
from deephoyer_tf.structure import builtin_layers  # noqa: F401 (registers Keras' layers)
from deephoyer_tf.structure import registry as _registry
from deephoyer_tf.structure.cutters import Cut
from deephoyer_tf.structure.cutters import cut_kernel_layer
from deephoyer_tf.structure.cutters import fold_dense
from deephoyer_tf.structure.gather_units import GatherUnits
from deephoyer_tf.structure.patterns import PatternSummary
from deephoyer_tf.structure.patterns import pattern_summary
from deephoyer_tf.structure.registry import KernelSpec
from deephoyer_tf.structure.registry import LayerEntry
from deephoyer_tf.structure.registry import UnhandledLayerWarning
from deephoyer_tf.structure.registry import register_layer
from deephoyer_tf.structure.registry import registered_entries
from deephoyer_tf.structure.registry import supported_types
from deephoyer_tf.structure.registry import unregister_layer
from deephoyer_tf.structure.report import LayerReport
from deephoyer_tf.structure.report import SparsityReport
from deephoyer_tf.structure.report import sparsity_report
from deephoyer_tf.structure.surgery import ShrinkSummary
from deephoyer_tf.structure.surgery import shrink

__all__ = [
    "Cut",
    "GatherUnits",
    "KernelSpec",
    "LayerEntry",
    "LayerReport",
    "PatternSummary",
    "ShrinkSummary",
    "SparsityReport",
    "UnhandledLayerWarning",
    "cut_kernel_layer",
    "pattern_summary",
    "fold_dense",
    "register_layer",
    "registered_entries",
    "shrink",
    "sparsity_report",
    "supported_types",
    "unregister_layer",
]


def _register_keras_hub_layers(config=None):
    """Registers keras_hub's blocks (`keras_hub_layers`), if keras_hub is installed.

    Called on first sight of a keras_hub layer, and before `load_model` reads
    a file whose config names keras_hub (the classes `shrink` gives keras_hub
    blocks must be known then).
    """
    if config is not None and "keras_hub" not in str(config):
        return
    try:
        from deephoyer_tf.structure import keras_hub_layers  # noqa: F401 (registers them)
    except ImportError:  # keras_hub not installed
        pass


_registry.on_first_sight("keras_hub", _register_keras_hub_layers)
_loading.before_load(_register_keras_hub_layers)
