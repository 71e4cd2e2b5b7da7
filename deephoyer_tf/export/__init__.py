"""Export: verified TFLite / LiteRT files, sparse weights, and their latency.

* `tflite`: `export_tflite`, one converter run, checked against the model
  before the file is written (with the TF 2.21 sparse-format workarounds).
* `storage`: each weight tensor's storage (dense, CSR, 1xB blocks), chosen
  and encoded after the dense conversion, with the reason.
* `runtime`: the LiteRT interpreter and op resolvers.
* `latency`: `tflite_latency`.
"""

from deephoyer_tf.export.latency import LatencyResult
from deephoyer_tf.export.latency import tflite_latency
from deephoyer_tf.export.runtime import OP_RESOLVERS
from deephoyer_tf.export.runtime import auto_op_resolver
from deephoyer_tf.export.runtime import load_interpreter
from deephoyer_tf.export.storage import TensorStorage
from deephoyer_tf.export.tflite import DEFAULT_MIN_AGREEMENT
from deephoyer_tf.export.tflite import DEFAULT_TOLERANCES
from deephoyer_tf.export.tflite import QUANTIZE_MODES
from deephoyer_tf.export.tflite import ExportResult
from deephoyer_tf.export.tflite import export_tflite

__all__ = [
    "DEFAULT_MIN_AGREEMENT",
    "DEFAULT_TOLERANCES",
    "OP_RESOLVERS",
    "QUANTIZE_MODES",
    "ExportResult",
    "LatencyResult",
    "TensorStorage",
    "auto_op_resolver",
    "export_tflite",
    "load_interpreter",
    "tflite_latency",
]
