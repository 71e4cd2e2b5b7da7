"""Export: verified TFLite / LiteRT files, sparse weights, and their latency.

* `tflite`: `export_tflite`, the converter run and checked against the model
  (with the TF 2.21 sparse-format workarounds).
* `runtime`: the LiteRT interpreter and op resolvers.
* `latency`: `tflite_latency`.
"""

from deephoyer_tf.export.latency import LatencyResult
from deephoyer_tf.export.latency import tflite_latency
from deephoyer_tf.export.runtime import OP_RESOLVERS
from deephoyer_tf.export.runtime import auto_op_resolver
from deephoyer_tf.export.runtime import load_interpreter
from deephoyer_tf.export.tflite import DEFAULT_TOLERANCES
from deephoyer_tf.export.tflite import QUANTIZE_MODES
from deephoyer_tf.export.tflite import ExportResult
from deephoyer_tf.export.tflite import export_tflite

__all__ = [
    "DEFAULT_TOLERANCES",
    "OP_RESOLVERS",
    "QUANTIZE_MODES",
    "ExportResult",
    "LatencyResult",
    "auto_op_resolver",
    "export_tflite",
    "load_interpreter",
    "tflite_latency",
]
