"""Verified TFLite / LiteRT export, with TFLite's sparse weight format.

`export_tflite` converts a Keras model (Keras 3 or tf_keras) with
`tf.lite.TFLiteConverter.from_keras_model` (in TF 2.21 this handles Keras 3
models by exporting ``model(x, training=False)`` through
`keras.export.ExportArchive`, and tf_keras models through a SavedModel), writes
the ``.tflite`` file, then runs the file on sample inputs and compares it with
the Keras model.

Two problems of TF 2.21 / ai-edge-litert 2.3 are handled here (measured with
`tests/test_export.py`):

1. Op resolver. Under the default op resolver, which applies the XNNPACK
   delegate, files holding *integer* weights in sparse format
   (``quantize="dynamic"`` or ``"int8"`` with ``sparse=True``) either fail in
   `allocate_tensors` ("TfLiteXNNPackDelegate failed to prepare": unstructured
   CSR format, and full-integer models) or run and return NaN or garbage
   (dynamic-range weights in 1x16 blocks, the format the converter picks when
   zeros come in runs of 16). Without the default delegates
   (``experimental_op_resolver_type=BUILTIN_WITHOUT_DEFAULT_DELEGATES``) the
   builtin kernels give the same results as the dense file, with one or more
   threads. Float sparse files and dense files run correctly under XNNPACK.
   So ``op_resolver="auto"`` picks ``BUILTIN_WITHOUT_DEFAULT_DELEGATES``
   exactly for files with integer sparse tensors, and the default
   (``BUILTIN``) otherwise; `ExportResult.interpreter_options` says how to
   create an interpreter that gives the checked results.
2. Block encoding. When the converter stores a weight matrix in 1xB blocks
   (B = 4 for float, 16 for int8) and its input size is not a multiple of B
   (LeNet-300-100's ``fc2`` has 300 inputs), it drops the last, partial block
   of every row: those weights are lost and the file is wrong under every op
   resolver. `export_tflite` detects such tensors and stores them densely
   (their data taken from a dense conversion of the same model), with a
   warning; `ExportResult.stored_dense` names them.

Whether sparse weights also run faster depends on the format the converter
picks: unstructured (CSR) tensors are read through ``DENSIFY`` ops (smaller
file, dense speed), block-sparse ones (1x4 float, 1x16 int8) by sparse
fully-connected kernels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import warnings
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import atomic
from deephoyer_tf._internal import backend
from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation
from deephoyer_tf.export import runtime as runtime_lib
from deephoyer_tf.export.runtime import OP_RESOLVERS  # noqa: F401 (documented here)

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable
    from typing import Iterable

    import numpy.typing as npt

    ModelLike = Any  # a Keras 3 or tf_keras model
    # A `tf.lite.Interpreter` or an `ai_edge_litert.interpreter.Interpreter`.
    Interpreter = Any
    # TF's `representative_dataset`: a callable returning `[input_batch]` lists.
    RepresentativeDataset = Callable[[], Iterable[Any]]

QUANTIZE_MODES = (None, "dynamic", "int8")

# Default tolerance: max_abs_error <= atol + rtol * max(|keras output|).
DEFAULT_TOLERANCES = {
    None: (1e-4, 1e-4),
    "dynamic": (1e-3, 0.05),
    "int8": (1e-3, 0.1),
}

_NUM_SAMPLES = 8


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export_tflite` wrote and how well the file matches the model.

    Attributes:
        path: the ``.tflite`` file.
        size_bytes: its size.
        gzip_bytes: its size after ``gzip -9`` (what a download costs).
        max_abs_error: ``max |tflite(x) - keras(x)|`` over the sample inputs.
        tolerance: the bound it was checked against.
        sparse_tensors: number of tensors stored in TFLite's sparse format.
        quantize: the quantization mode (None, ``"dynamic"``, ``"int8"``).
        runtime: ``"ai_edge_litert"`` or ``"tf.lite"``, the interpreter used.
        op_resolver: the op resolver the check ran with.
        default_delegate_error: None when the file also passes the check under
            the default op resolver ``"BUILTIN"`` (XNNPACK); otherwise what
            goes wrong there (always checked).
        stored_dense: names of tensors kept dense although `sparse=True`,
            because TFLite's block-sparse encoding of them is wrong (see
            `export_tflite`).
    """

    path: str
    size_bytes: int
    gzip_bytes: int
    max_abs_error: float
    tolerance: float
    sparse_tensors: int
    quantize: str | None
    runtime: str
    op_resolver: str
    default_delegate_error: str | None = None
    stored_dense: tuple[str, ...] = ()

    @property
    def interpreter_options(self) -> dict[str, str]:
        """Interpreter options that give the checked results, by name.

        ``{"experimental_op_resolver_type": "BUILTIN_WITHOUT_DEFAULT_DELEGATES"}``
        means ``Interpreter(..., experimental_op_resolver_type=
        OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)``.
        """
        return {"experimental_op_resolver_type": self.op_resolver}

    def interpreter(self, num_threads: int | None = None) -> Interpreter:
        """A new interpreter for the file, with the options the check used.

        Example::

            it = result.interpreter()
            it.allocate_tensors()
        """
        return runtime_lib.load_interpreter(self.path, self.op_resolver, num_threads)


# ------------------------------------------------------------------ helpers


def _misaligned_blocks(sparse):
    """Sparse tensors in 1xB blocks whose last dimension B does not divide.

    The TF 2.21 converter drops the trailing partial block of each row of such
    tensors (float 1x4 or integer 1x16 blocks), so the file computes wrong
    results under any op resolver.
    """
    bad = []
    for d in sparse:
        params = d["sparsity_parameters"]
        if len(params.get("block_map", ())) == 0:
            continue
        block = params["dim_metadata"][-1].get("dense_size")
        if block and d["shape"][-1] % block:
            bad.append(d)
    return bad


def _describe(details):
    return ", ".join(
        f"{d['name']} (shape {tuple(int(v) for v in d['shape'])}, 1x"
        f"{d['sparsity_parameters']['dim_metadata'][-1]['dense_size']} blocks)"
        for d in details
    )


def _store_dense(content, dense_content, names):
    """Replaces the tensors `names` of `content` by their dense-file versions.

    The two files come from the same model, with and without sparsity, so
    their operators (DENSIFY aside) correspond one to one; a tensor is matched
    through the operator and input slot that read it. Returns the new file
    bytes, or None when a tensor cannot be matched (other operators, shape,
    type or quantization scales, or read by a DENSIFY op).
    """
    def name(tensor):
        value = tensor.name
        return value.decode() if isinstance(value, bytes) else value

    def operators(model):
        ops = [
            (private_api.tflite_opcode_name(model, op.opcodeIndex), op)
            for op in model.subgraphs[0].operators
        ]
        return [(kind, op) for kind, op in ops if kind != "DENSIFY"], ops

    def scales(tensor):
        q = tensor.quantization
        return None if q is None or q.scale is None else np.asarray(q.scale).tolist()

    model = private_api.tflite_to_object(content)
    dense = private_api.tflite_to_object(dense_content)
    (ops, all_ops), (dense_ops, _) = operators(model), operators(dense)
    if [kind for kind, _ in ops] != [kind for kind, _ in dense_ops]:
        return None
    tensors, dense_tensors = model.subgraphs[0].tensors, dense.subgraphs[0].tensors
    targets = {i for i, t in enumerate(tensors) if name(t) in names}
    if any(kind == "DENSIFY" and targets & set(op.inputs) for kind, op in all_ops):
        return None
    done = set()
    for (_, op), (_, twin_op) in zip(ops, dense_ops):
        for slot, index in enumerate(op.inputs):
            if index not in targets or index in done:
                continue
            tensor, twin = tensors[index], dense_tensors[twin_op.inputs[slot]]
            if (
                twin.sparsity is not None
                or list(twin.shape) != list(tensor.shape)
                or twin.type != tensor.type
                or scales(twin) != scales(tensor)
            ):
                return None
            model.buffers[tensor.buffer].data = dense.buffers[twin.buffer].data
            tensor.sparsity = None
            done.add(index)
    if done != targets:
        return None
    return private_api.tflite_to_bytes(model)


def _input_shape(model):
    inputs = getattr(model, "inputs", None)
    outputs = getattr(model, "outputs", None)
    if not inputs or not outputs:
        raise ValueError(
            "Invalid value for argument `model`. Expected a built model with "
            f"known inputs and outputs. Received: model {model.name!r} of type "
            f"{type(model).__name__} without them (call it on data first)."
        )
    if len(inputs) != 1 or len(outputs) != 1:
        raise ValueError(
            "Invalid value for argument `model`. Expected a model with one input "
            f"and one output. Received: model {model.name!r} with {len(inputs)} "
            f"inputs and {len(outputs)} outputs."
        )
    return tuple(inputs[0].shape)


def _as_samples(value, argument, shape):
    array = np.asarray(value, dtype=np.float32)
    if array.ndim != len(shape) or any(
        d is not None and d != s for d, s in zip(shape[1:], array.shape[1:])
    ) or len(array) == 0:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a non-empty array "
            f"of samples of shape {shape}. Received: array of shape {array.shape}"
        )
    return array


def _representative_dataset(data, shape):
    """TF's representative_dataset callable from an array or a callable."""
    if callable(data):
        return data
    if isinstance(data, np.ndarray):
        samples = _as_samples(data, "representative_data", shape)

        def generator():
            for sample in samples:
                yield [sample[np.newaxis]]

        return generator
    raise TypeError(
        "Invalid type for argument `representative_data`. Expected a NumPy array "
        "of input samples (first axis: samples) or a callable returning an "
        "iterator of lists of input arrays. Received: "
        f"representative_data of type {type(data).__name__}"
    )


def _convert(model, sparse, quantize, representative_data, shape):
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "int8":
        converter.representative_dataset = _representative_dataset(
            representative_data, shape
        )
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Keras 3's ExportArchive prints where it saved the temporary artifact;
    # the converter warns about input statistics that float inputs never have.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        return converter.convert()


def _validate(sparse, quantize, representative_data, op_resolver):
    if not isinstance(sparse, bool):
        raise TypeError(
            "Invalid type for argument `sparse`. Expected a bool. "
            f"Received: sparse={sparse!r} of type {type(sparse).__name__}"
        )
    if quantize not in QUANTIZE_MODES:
        raise ValueError(
            "Invalid value for argument `quantize`. Expected one of "
            f"{QUANTIZE_MODES}. Received: quantize={quantize!r}"
        )
    if quantize == "int8" and representative_data is None:
        raise ValueError(
            "Invalid value for argument `representative_data`. Expected input "
            "samples for calibration when quantize='int8'. "
            "Received: representative_data=None"
        )
    if quantize != "int8" and representative_data is not None:
        raise ValueError(
            "Invalid value for argument `representative_data`. It is only used "
            f"with quantize='int8'. Received it with quantize={quantize!r}"
        )
    runtime_lib.check_op_resolver(op_resolver)


def _check_tolerance(value, name):
    return validation.check_float(value, name, allow_none=True)


def _compare(content, samples, reference, op_resolver, tolerance):
    """Max abs error under `op_resolver`, or the reason it failed."""
    try:
        outputs = runtime_lib.run(content, samples, op_resolver)
    except (RuntimeError, ValueError) as e:
        return None, f"{type(e).__name__}: {e}".strip()
    if not np.all(np.isfinite(outputs)):
        return None, "non-finite (NaN or inf) outputs"
    error = float(np.max(np.abs(outputs - reference)))
    if error > tolerance:
        return error, f"max abs error {error:.3g} > tolerance {tolerance:.3g}"
    return error, None


def _verify(content, samples, reference, op_resolver, tolerance):
    """Checks `content`; returns (error, problem, resolver, default_problem)."""
    resolver = runtime_lib.auto_op_resolver(content) if op_resolver == "auto" else op_resolver
    error, problem = _compare(content, samples, reference, resolver, tolerance)
    if resolver == "BUILTIN":
        default_problem = problem
    else:
        _, default_problem = _compare(content, samples, reference, "BUILTIN", tolerance)
    if problem is not None and op_resolver == "auto" and resolver == "BUILTIN":
        resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
        error, problem = _compare(content, samples, reference, resolver, tolerance)
    return error, problem, resolver, default_problem


# ------------------------------------------------------------------ public


def export_tflite(
    model: ModelLike,
    path: str | os.PathLike,
    *,
    sparse: bool = True,
    quantize: str | None = None,
    representative_data: np.ndarray | RepresentativeDataset | None = None,
    sample_inputs: npt.ArrayLike | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    op_resolver: str = "auto",
) -> ExportResult:
    """Writes `model` as a ``.tflite`` file and checks it against the model.

    The file is run on `sample_inputs`, one sample at a time, and compared with
    ``model(sample_inputs, training=False)``; it passes when every output is
    finite and ``max_abs_error <= atol + rtol * max|keras output|``.

    Args:
        model: a built Keras model (Keras 3 or tf_keras) with one input and one
            output.
        path: where to write the file (parent folders are created).
        sparse: store weights in TFLite's sparse format
            (`tf.lite.Optimize.EXPERIMENTAL_SPARSITY`); the converter does so
            for tensors that are sparse enough, and inserts ``DENSIFY`` ops for
            formats the kernels cannot use directly.
        quantize: None (float32), ``"dynamic"`` (dynamic-range: int8 weights,
            float activations) or ``"int8"`` (full integer: int8 weights and
            activations, float32 input and output, calibrated on
            `representative_data`).
        representative_data: for ``"int8"`` only: a NumPy array of input
            samples (first axis: samples), or TF's form, a callable returning
            an iterator of ``[input_batch]`` lists.
        sample_inputs: the inputs of the check, an array with the model's input
            shape. Default: for ``"int8"``, the first 16 samples of an array
            `representative_data`; else 8 standard-normal samples (seed 0).
        atol, rtol: tolerance of the check; None takes the default of
            `quantize` from `DEFAULT_TOLERANCES` (float: 1e-4, 1e-4; dynamic:
            1e-3, 0.05; int8: 1e-3, 0.1).
        op_resolver: the interpreter's op resolver for the check: ``"auto"``
            (see `auto_op_resolver`), ``"BUILTIN"`` (default, XNNPACK),
            ``"BUILTIN_WITHOUT_DEFAULT_DELEGATES"`` or ``"BUILTIN_REF"``. With
            ``"auto"``, when the file fails under ``"BUILTIN"`` the check is
            repeated without the default delegates.

    Returns:
        An `ExportResult`.

    Warns:
        RuntimeWarning: when tensors are stored densely to avoid the block
            encoding problem, or when the file is correct only without the
            default delegates (see the module docstring).

    Raises:
        TypeError: `model` is not a Keras model, or another argument has the
            wrong type.
        ValueError: a bad argument value, or a model with several inputs or
            outputs.
        RuntimeError: the file's outputs are not finite or differ from the
            model's by more than the tolerance (the file is left in place).

    Example::

        result = export_tflite(model, "lenet.tflite", sparse=True)
        result.size_bytes, result.gzip_bytes, result.max_abs_error
    """
    backend.require_tensorflow("deephoyer_tf.export_tflite (the TFLite converter)")
    flavours.check_model(model)
    path = validation.check_path(path, "path")
    _validate(sparse, quantize, representative_data, op_resolver)
    atol, rtol = _check_tolerance(atol, "atol"), _check_tolerance(rtol, "rtol")
    default_atol, default_rtol = DEFAULT_TOLERANCES[quantize]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    shape = _input_shape(model)
    if sample_inputs is not None:
        samples = _as_samples(sample_inputs, "sample_inputs", shape)
    elif quantize == "int8" and isinstance(representative_data, np.ndarray):
        samples = _as_samples(representative_data, "representative_data", shape)[:16]
    else:
        if any(d is None for d in shape[1:]):
            raise ValueError(
                "Invalid value for argument `sample_inputs`. Expected samples "
                f"when the input shape {shape} has unknown dimensions. "
                "Received: sample_inputs=None"
            )
        rng = np.random.default_rng(0)
        samples = rng.standard_normal((_NUM_SAMPLES,) + shape[1:]).astype(np.float32)

    content = _convert(model, sparse, quantize, representative_data, shape)
    misaligned = _misaligned_blocks(runtime_lib.sparse_tensors(content)) if sparse else []
    stored_dense = ()
    if misaligned:
        dense = _convert(model, False, quantize, representative_data, shape)
        repaired = _store_dense(content, dense, {d["name"] for d in misaligned})
        if repaired is not None:
            content, stored_dense = repaired, tuple(d["name"] for d in misaligned)
            warnings.warn(
                f"{path}: stored {_describe(misaligned)} in dense format: the "
                "TFLite converter drops the last partial block of each row "
                "when the input size is not a multiple of the block size.",
                RuntimeWarning,
                stacklevel=2,
            )
    reference = np.asarray(model(samples, training=False), dtype=np.float64)
    tolerance = atol + rtol * float(np.max(np.abs(reference)))
    error, problem, resolver, default_problem = _verify(
        content, samples, reference, op_resolver, tolerance
    )
    atomic.atomic_write_bytes(path, content)  # a temporary file, then a rename
    if problem is not None:
        hint = ""
        if misaligned and not stored_dense:
            hint = (
                " Known TFLite problem (TF 2.21): weights stored in 1xB blocks "
                "lose their last partial block when the layer's input size is "
                f"not a multiple of B; here: {_describe(misaligned)}. Export "
                "with sparse=False, or give those layers input sizes that are "
                "multiples of 16."
            )
        raise RuntimeError(
            f"TFLite check failed for {path} (quantize={quantize!r}, "
            f"sparse={sparse}, op_resolver={resolver}): {problem}, on "
            f"{len(samples)} samples of shape {samples.shape[1:]}.{hint}"
        )
    if resolver != "BUILTIN" and default_problem is not None and op_resolver == "auto":
        warnings.warn(
            f"{path}: under the default op resolver (XNNPACK) the file gives "
            f"{default_problem}; it is correct with experimental_op_resolver_type="
            f"{resolver} (see ExportResult.interpreter_options).",
            RuntimeWarning,
            stacklevel=2,
        )
    return ExportResult(
        path=str(path),
        size_bytes=len(content),
        gzip_bytes=len(gzip.compress(content, compresslevel=9)),
        max_abs_error=error,
        tolerance=tolerance,
        sparse_tensors=len(runtime_lib.sparse_tensors(content)),
        quantize=quantize,
        runtime=runtime_lib.interpreter_module()[2],
        op_resolver=resolver,
        default_delegate_error=default_problem,
        stored_dense=stored_dense,
    )


