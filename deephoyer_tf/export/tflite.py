"""Verified TFLite / LiteRT export, with TFLite's sparse weight format.

`export_tflite` converts a Keras model (Keras 3 or tf_keras) once, densely
(`tf.lite.TFLiteConverter.from_keras_model`; models with several inputs or
outputs through a `tf.function` of ``model(x, training=False)``), stores each
weight tensor dense or sparse as `deephoyer_tf.export.storage` decides, then
runs the file on sample inputs and compares it with the Keras model, and only
then writes the ``.tflite`` file (temporary file, then a rename: a rejected
file never reaches the target path).

Storage (``sparse=``):

* ``"auto"`` (default): a tensor is stored sparse only where the format helps:
  float32 weights in CSR (read through ``DENSIFY``, once: smaller file, dense
  speed) or, for fully-connected weights zero in 1x4 runs, in 1x4 blocks (the
  sparse float kernel), when that is smaller than dense; int8 weights only in
  1x16 blocks (the only format TFLite's int8 sparse kernels read), else dense:
  dense int8 runs under the default XNNPACK delegate and is the fastest.
* True: every tensor the converter would store sparse (at least 30% zeros),
  as the converter would, but never in blocks a partial block would break.
* False: all dense.

`ExportResult.storage` lists, per weight tensor, its format and why.

Two problems of TF 2.21 / ai-edge-litert 2.3 are handled here (measured with
`tests/export/test_tflite.py`):

1. Op resolver. Under the default op resolver, which applies the XNNPACK
   delegate, files holding *integer* weights in sparse format either fail in
   `allocate_tensors` ("TfLiteXNNPackDelegate failed to prepare": CSR, and
   full-integer models) or run and return NaN or garbage (dynamic-range
   weights in 1x16 blocks). Without the default delegates
   (``experimental_op_resolver_type=BUILTIN_WITHOUT_DEFAULT_DELEGATES``) the
   builtin kernels give the same results as the dense file. So
   ``op_resolver="auto"`` picks ``BUILTIN_WITHOUT_DEFAULT_DELEGATES`` exactly
   for files with integer sparse tensors, and the default (``BUILTIN``)
   otherwise; `ExportResult.interpreter_options` says how to create an
   interpreter that gives the checked results. ``sparse="auto"`` stores int8
   weights sparse only in 1x16 blocks, so files of unstructured sparse models
   stay dense int8 and run under XNNPACK.
2. Block encoding. When the converter itself stores a weight matrix in 1xB
   blocks (B = 4 for float, 16 for int8) and its input size is not a multiple
   of B (LeNet-300-100's ``fc2`` has 300 inputs), it drops the last, partial
   block of every row. `export_tflite` no longer lets the converter choose
   (it converts densely and encodes the weights itself), and never writes
   1xB blocks for such tensors: they are stored in CSR or dense, decided from
   the shapes before the file is written; the converter runs once.

The check (``quantize=None`` or ``"dynamic"``): every output finite and
``max_abs_error <= atol + rtol * max|keras output|``. For ``"int8"``, whose
error is quantization error, the check is top-1 agreement with the Keras
model on outputs with a class axis (last axis of size 2 or more): the file is
rejected when fewer than `min_agreement` (default 99%) of the samples get the
same predicted class; max and mean abs error are reported, and tolerance is
also enforced when `atol` or `rtol` is given.
"""

from __future__ import annotations

import contextlib
import dataclasses
import gzip
import io
import os
import sys
import time
import warnings
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import atomic
from deephoyer_tf._internal import backend
from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import validation
from deephoyer_tf.export import runtime as runtime_lib
from deephoyer_tf.export import storage as storage_lib
from deephoyer_tf.export.runtime import OP_RESOLVERS  # noqa: F401 (documented here)
from deephoyer_tf.export.storage import TensorStorage

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
SPARSE_MODES = storage_lib.SPARSE_MODES

# Default tolerance: max_abs_error <= atol + rtol * max(|keras output|).
DEFAULT_TOLERANCES = {
    None: (1e-4, 1e-4),
    "dynamic": (1e-3, 0.05),
    "int8": (1e-3, 0.1),
}
# int8: the file is rejected when fewer samples than this get the Keras
# model's predicted class.
DEFAULT_MIN_AGREEMENT = 0.99

_NUM_SAMPLES = 8
_INT8_SAMPLES = 256


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What `export_tflite` wrote and how well the file matches the model.

    Attributes:
        path: the ``.tflite`` file.
        size_bytes: its size.
        gzip_bytes: its size after ``gzip -9`` (what a download costs).
        max_abs_error: ``max |tflite(x) - keras(x)|`` over the sample inputs.
        tolerance: the bound it was checked against (None when, for int8,
            only agreement was checked).
        sparse_tensors: number of tensors stored in TFLite's sparse format.
        quantize: the quantization mode (None, ``"dynamic"``, ``"int8"``).
        runtime: ``"ai_edge_litert"`` or ``"tf.lite"``, the interpreter used.
        op_resolver: the op resolver the check ran with.
        default_delegate_error: None when the file also passes the check under
            the default op resolver ``"BUILTIN"`` (XNNPACK); otherwise what
            goes wrong there (always checked).
        stored_dense: names of weight tensors with at least 30% zeros (sparse
            enough for the converter) stored dense; `storage` says why.
        storage: per weight tensor, a `TensorStorage`: format, size, reason.
        mean_abs_error: mean of ``|tflite(x) - keras(x)|``.
        agreement: fraction of samples whose predicted class (argmax of the
            last axis) is the Keras model's; None for outputs without a class
            axis.
        accuracy: the file's accuracy on the samples when `labels` were
            given, else None.
        samples: number of samples checked.
        sparse: the storage mode asked for.
    """

    path: str
    size_bytes: int
    gzip_bytes: int
    max_abs_error: float
    tolerance: float | None
    sparse_tensors: int
    quantize: str | None
    runtime: str
    op_resolver: str
    default_delegate_error: str | None = None
    stored_dense: tuple[str, ...] = ()
    storage: tuple[TensorStorage, ...] = ()
    mean_abs_error: float = 0.0
    agreement: float | None = None
    accuracy: float | None = None
    samples: int = 0
    sparse: Any = "auto"

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

    def storage_report(self) -> str:
        """One line per weight tensor: its format and why."""
        return "\n".join(str(s) for s in self.storage)

    def check_summary(self) -> str:
        """The check, in one line."""
        parts = [f"max abs error {self.max_abs_error:.3g}",
                 f"mean abs error {self.mean_abs_error:.3g}"]
        if self.agreement is not None:
            parts.append(f"top-1 agreement {self.agreement:.2%}")
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.2%}")
        return f"{', '.join(parts)} on {self.samples} samples"


# ------------------------------------------------------------------ inputs


class _Inputs:
    """The model's inputs: names, shapes and how to pack per-input arrays."""

    def __init__(self, model):
        inputs = getattr(model, "inputs", None)
        outputs = getattr(model, "outputs", None)
        if not inputs or not outputs:
            raise ValueError(
                "Invalid value for argument `model`. Expected a built model with "
                f"known inputs and outputs. Received: model {model.name!r} of type "
                f"{type(model).__name__} without them (call it on data first)."
            )
        self.model = model
        self.names = [_input_name(t, i) for i, t in enumerate(inputs)]
        self.shapes = [tuple(t.shape) for t in inputs]
        self.dtypes = [str(getattr(t.dtype, "name", t.dtype)) for t in inputs]
        self.single = len(inputs) == 1 and len(outputs) == 1
        self.structure = getattr(model, "_inputs_struct", None)
        self.by_name = isinstance(self.structure, dict)

    def arrays(self, value, argument):
        """Per-input arrays (a list in `names` order) from an array, list or dict."""
        if len(self.names) == 1 and not isinstance(value, (dict, list, tuple)):
            values = [value]
        elif isinstance(value, dict):
            missing = sorted(set(self.names) - set(value))
            extra = sorted(set(value) - set(self.names))
            if missing or extra:
                raise ValueError(
                    f"Invalid value for argument `{argument}`. Expected a dict with "
                    f"the model's input names {self.names}. Received: keys "
                    f"{sorted(value)}"
                )
            values = [value[name] for name in self.names]
        elif isinstance(value, (list, tuple)) and len(value) == len(self.names):
            values = list(value)
        else:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected one array per "
                f"model input ({len(self.names)}: {self.names}), as a list or a dict. "
                f"Received: {type(value).__name__}"
            )
        arrays = [_as_samples(v, argument, shape, dtype, name if len(self.names) > 1 else None)
                  for v, shape, dtype, name in zip(values, self.shapes, self.dtypes, self.names)]
        if len({len(a) for a in arrays}) > 1:
            raise ValueError(
                f"Invalid value for argument `{argument}`. Expected the same number "
                f"of samples for every input. Received: {[len(a) for a in arrays]}"
            )
        return arrays

    def keras_input(self, arrays):
        if len(arrays) == 1 and not self.by_name:
            return arrays[0]
        if self.by_name:
            return dict(zip(self.names, arrays))
        return list(arrays)


def _input_name(tensor, index):
    name = getattr(tensor, "name", None) or f"input_{index}"
    return name.split(":")[0]


def _as_samples(value, argument, shape, dtype="float32", name=None):
    if not np.issubdtype(np.dtype(dtype), np.number):
        dtype = "float32"
    array = np.asarray(value, dtype=dtype)
    where = f"`{argument}` (input {name!r})" if name else f"`{argument}`"
    if array.ndim != len(shape) or any(
        d is not None and d != s for d, s in zip(shape[1:], array.shape[1:])
    ) or len(array) == 0:
        raise ValueError(
            f"Invalid value for argument {where}. Expected a non-empty array "
            f"of samples of shape {shape}. Received: array of shape {array.shape}"
        )
    return array


def _check_representative_type(data, inputs):
    several = (list, tuple, dict) if len(inputs.names) > 1 else ()
    if data is None or callable(data) or isinstance(data, (np.ndarray,) + several):
        return
    raise TypeError(
        "Invalid type for argument `representative_data`. Expected a NumPy array "
        "of input samples (first axis: samples; a list or dict of them for "
        "several inputs) or a callable returning an iterator of lists of input "
        f"arrays. Received: representative_data of type {type(data).__name__}"
    )


def _representative_dataset(data, inputs):
    """TF's representative_dataset callable from arrays or a callable."""
    _check_representative_type(data, inputs)
    if callable(data):
        return data
    if isinstance(data, (np.ndarray, list, tuple, dict)):
        arrays = inputs.arrays(data, "representative_data")

        def generator():
            for i in range(len(arrays[0])):
                batch = [a[i][np.newaxis] for a in arrays]
                yield batch if inputs.single else dict(zip(inputs.names, batch))

        return generator
    raise TypeError(
        "Invalid type for argument `representative_data`. Expected a NumPy array "
        "of input samples (first axis: samples; a list or dict of them for "
        "several inputs) or a callable returning an iterator of lists of input "
        f"arrays. Received: representative_data of type {type(data).__name__}"
    )


def _keras_outputs(model, inputs, arrays):
    import keras

    outputs = model(inputs.keras_input(arrays), training=False)
    flat = keras.tree.flatten(outputs) if not inputs.single else [outputs]
    return [np.asarray(o, dtype=np.float64) for o in flat]


# ------------------------------------------------------------------ conversion


def _converter(model, inputs):
    import tensorflow as tf

    if inputs.single:
        return tf.lite.TFLiteConverter.from_keras_model(model)
    import keras

    specs = [tf.TensorSpec((None,) + s[1:], dtype=d, name=n)
             for n, s, d in zip(inputs.names, inputs.shapes, inputs.dtypes)]

    def serve(*xs):
        packed = inputs.keras_input(list(xs))
        return keras.tree.flatten(model(packed, training=False))

    # The converter freezes the variables it can reach from the trackable
    # object: Keras 3 variables are reached through their TF variables.
    module = tf.Module()
    module.variables_ = [getattr(v, "value", v) for v in model.variables]
    module.serve = tf.function(serve)
    function = module.serve.get_concrete_function(*specs)
    return tf.lite.TFLiteConverter.from_concrete_functions([function], module)


def _convert(model, sparse, quantize, representative_data, inputs):
    """One converter run. `sparse` asks the converter for its own sparse format
    (kept for the tests that pin its TF 2.21 bugs; `export_tflite` passes
    False and stores weights itself)."""
    import tensorflow as tf

    if not isinstance(inputs, _Inputs):
        inputs = _Inputs(model)
    converter = _converter(model, inputs)
    optimizations = []
    if quantize is not None:
        optimizations.append(tf.lite.Optimize.DEFAULT)
    if sparse:
        optimizations.append(tf.lite.Optimize.EXPERIMENTAL_SPARSITY)
    converter.optimizations = optimizations
    if quantize == "int8":
        converter.representative_dataset = _representative_dataset(representative_data, inputs)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    # Keras 3's ExportArchive prints where it saved the temporary artifact;
    # the converter warns about input statistics that float inputs never have.
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Statistics for quantized inputs")
        return converter.convert()


def _float32_copy(model):
    """A float32 copy of a mixed-precision model (None when it is float32)."""
    policy = getattr(model, "dtype_policy", None)
    name = getattr(policy, "name", None)
    layers = getattr(model, "layers", [])
    mixed = {getattr(getattr(layer, "dtype_policy", None), "name", None) for layer in layers}
    mixed = sorted(p for p in mixed | {name} if p and p.startswith("mixed_"))
    if not mixed:
        return None
    if flavours.is_tf_keras(model):
        raise ValueError(
            "Invalid value for argument `model`. Expected a float32 model: TFLite "
            f"cannot convert the dtype policy {mixed[0]!r} of this tf_keras model. "
            "Rebuild it under the 'float32' policy, load its weights, and export that."
        )
    import keras

    def clone(layer):
        config = layer.get_config()
        if "dtype" in config:
            config["dtype"] = "float32"
        return layer.__class__.from_config(config)

    try:
        copy = keras.models.clone_model(model, clone_function=clone)
        copy.set_weights([np.asarray(w, dtype=np.float32) for w in model.get_weights()])
    except Exception as error:  # noqa: BLE001 - reported with the policy's name
        raise ValueError(
            "Invalid value for argument `model`. Expected a float32 model: TFLite "
            f"cannot convert the dtype policy {mixed[0]!r}, and a float32 copy "
            f"could not be made ({type(error).__name__}: {error}). Rebuild the model "
            "under keras.config.set_dtype_policy('float32'), load its weights, and "
            "export that."
        ) from error
    return copy


# ------------------------------------------------------------------ checks


def _validate(sparse, quantize, representative_data, op_resolver):
    if sparse not in SPARSE_MODES or (sparse not in ("auto",) and not isinstance(sparse, bool)):
        if isinstance(sparse, str) or isinstance(sparse, bool):
            raise ValueError(
                "Invalid value for argument `sparse`. Expected 'auto', True or False. "
                f"Received: sparse={sparse!r}"
            )
        raise TypeError(
            "Invalid type for argument `sparse`. Expected 'auto' or a bool. "
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


@dataclasses.dataclass
class _Check:
    error: float | None = None
    mean_error: float = 0.0
    agreement: float | None = None
    accuracy: float | None = None
    problem: str | None = None


def _run(content, inputs, arrays, op_resolver):
    if inputs.single:
        return [runtime_lib.run(content, arrays[0], op_resolver)]
    return runtime_lib.run_signature(content, dict(zip(inputs.names, arrays)), op_resolver)


def _compare(content, inputs, arrays, reference, op_resolver, rule):
    """The check under `op_resolver`: a `_Check`, `problem` None when it passes."""
    try:
        outputs = _run(content, inputs, arrays, op_resolver)
    except (RuntimeError, ValueError) as e:
        return _Check(problem=f"{type(e).__name__}: {e}".strip())
    if not all(np.all(np.isfinite(o)) for o in outputs):
        return _Check(problem="non-finite (NaN or inf) outputs")
    diffs = [np.abs(o - r) for o, r in zip(outputs, reference)]
    check = _Check(
        error=float(max(np.max(d) for d in diffs)),
        mean_error=float(np.mean(np.concatenate([d.reshape(-1) for d in diffs]))),
    )
    classes = [(o, r) for o, r in zip(outputs, reference) if o.ndim >= 2 and o.shape[-1] >= 2]
    if classes:
        check.agreement = float(min(
            np.mean(np.argmax(o, axis=-1) == np.argmax(r, axis=-1)) for o, r in classes))
        labels = rule.get("labels")
        if labels is not None:
            check.accuracy = float(np.mean(np.argmax(classes[0][0], axis=-1).reshape(-1)
                                           == labels.reshape(-1)))
    tolerance, min_agreement = rule.get("tolerance"), rule.get("min_agreement")
    if min_agreement is not None and check.agreement is not None \
            and check.agreement < min_agreement:
        check.problem = (f"top-1 agreement with the Keras model {check.agreement:.2%} < "
                         f"min_agreement {min_agreement:.2%} (max abs error "
                         f"{check.error:.3g}, mean {check.mean_error:.3g})")
    elif tolerance is not None and check.error > tolerance:
        check.problem = f"max abs error {check.error:.3g} > tolerance {tolerance:.3g}"
    return check


def _verify(content, inputs, arrays, reference, op_resolver, rule):
    """Checks `content`; returns (check, resolver, default_problem)."""
    resolver = runtime_lib.auto_op_resolver(content) if op_resolver == "auto" else op_resolver
    check = _compare(content, inputs, arrays, reference, resolver, rule)
    if resolver == "BUILTIN":
        default_problem = check.problem
    else:
        default_problem = _compare(content, inputs, arrays, reference, "BUILTIN", rule).problem
    if check.problem is not None and op_resolver == "auto" and resolver == "BUILTIN":
        resolver = "BUILTIN_WITHOUT_DEFAULT_DELEGATES"
        check = _compare(content, inputs, arrays, reference, resolver, rule)
    elif op_resolver == "auto" and resolver != "BUILTIN" and default_problem is None \
            and check.problem is None:
        # Integer sparse tensors the default delegate handles correctly
        # (int8 1x16 blocks): keep XNNPACK for the rest of the graph.
        resolver = "BUILTIN"
    return check, resolver, default_problem


def _default_samples(inputs, quantize, representative_data):
    if quantize == "int8" and not callable(representative_data):
        arrays = inputs.arrays(representative_data, "representative_data")
        return [a[:_INT8_SAMPLES] for a in arrays]
    shapes = [s for s in inputs.shapes]
    for shape, dtype in zip(shapes, inputs.dtypes):
        if any(d is None for d in shape[1:]) or not np.issubdtype(np.dtype(dtype), np.floating):
            raise ValueError(
                "Invalid value for argument `sample_inputs`. Expected samples "
                f"when an input has unknown dimensions or is not float (shapes "
                f"{shapes}, dtypes {inputs.dtypes}). Received: sample_inputs=None"
            )
    rng = np.random.default_rng(0)
    return [rng.standard_normal((_NUM_SAMPLES,) + s[1:]).astype(np.float32) for s in shapes]


class _Progress:
    def __init__(self, verbose, path):
        self.verbose, self.path, self.start = verbose, path, time.perf_counter()

    def __call__(self, message):
        if self.verbose:
            elapsed = time.perf_counter() - self.start
            print(f"[export {self.path.name} {elapsed:6.1f} s] {message}", file=sys.stderr,
                  flush=True)


# ------------------------------------------------------------------ public


def export_tflite(
    model: ModelLike,
    path: str | os.PathLike,
    *,
    sparse: bool | str = "auto",
    quantize: str | None = None,
    representative_data: Any = None,
    sample_inputs: Any = None,
    labels: npt.ArrayLike | None = None,
    atol: float | None = None,
    rtol: float | None = None,
    min_agreement: float | None = None,
    op_resolver: str = "auto",
    verbose: int = 0,
) -> ExportResult:
    """Writes `model` as a ``.tflite`` file, once it has checked the file against the model.

    The file is run on `sample_inputs`, one sample at a time, and compared with
    ``model(sample_inputs, training=False)``. Float and dynamic-range files
    pass when every output is finite and ``max_abs_error <= atol + rtol *
    max|keras output|``. int8 files pass when the top-1 agreement with the
    Keras model (outputs with a class axis) is at least `min_agreement`; the
    tolerance is checked too when `atol` or `rtol` is given (int8 outputs
    without a class axis are checked against the tolerance). A file that fails
    is not written (nothing appears at `path`).

    Args:
        model: a built Keras model (Keras 3 or tf_keras). Several inputs and
            outputs are supported (list or dict inputs; outputs are compared
            one by one). A ``mixed_float16``/``mixed_bfloat16`` Keras 3 model
            is exported as a float32 copy.
        path: where to write the file (parent folders are created).
        sparse: ``"auto"`` (default: each weight tensor stored sparse only
            where that makes the file smaller without slowing it: float32 in
            CSR or 1x4 blocks, int8 only in 1x16 blocks), True (every tensor
            with at least 30% zeros, the converter's threshold) or False. See
            `ExportResult.storage` and `deephoyer_tf.export.storage`.
        quantize: None (float32), ``"dynamic"`` (dynamic-range: int8 weights,
            float activations) or ``"int8"`` (full integer: int8 weights and
            activations, float32 input and output, calibrated on
            `representative_data`).
        representative_data: for ``"int8"`` only: input samples (first axis:
            samples; a list or dict of arrays for several inputs), or TF's
            form, a callable returning an iterator of ``[input_batch]`` lists.
        sample_inputs: the inputs of the check, an array with the model's
            input shape (a list or dict of arrays for several inputs).
            Default: for ``"int8"``, the first 256 samples of
            `representative_data`; else 8 standard-normal samples (seed 0).
        labels: class labels of the samples checked (int8 or not), to report
            the file's accuracy; for int8 without `sample_inputs`, the labels
            of `representative_data` (the first 256 are used).
        atol, rtol: tolerance of the check; None takes the default of
            `quantize` from `DEFAULT_TOLERANCES` (float: 1e-4, 1e-4; dynamic:
            1e-3, 0.05; int8: 1e-3, 0.1, only for outputs without a class
            axis unless one of them is given).
        min_agreement: int8 (or any mode where given): the least fraction of
            samples whose predicted class must match the Keras model's; None
            takes `DEFAULT_MIN_AGREEMENT` (0.99) for int8.
        op_resolver: the interpreter's op resolver for the check: ``"auto"``
            (see `auto_op_resolver`), ``"BUILTIN"`` (default, XNNPACK),
            ``"BUILTIN_WITHOUT_DEFAULT_DELEGATES"`` or ``"BUILTIN_REF"``. With
            ``"auto"``, when the file fails under ``"BUILTIN"`` the check is
            repeated without the default delegates.
        verbose: 1 prints each stage (conversion, storage, check) with its
            elapsed time on stderr.

    Returns:
        An `ExportResult`.

    Warns:
        RuntimeWarning: when the file is correct only without the default
            delegates (see the module docstring).

    Raises:
        TypeError: `model` is not a Keras model, or another argument has the
            wrong type.
        ValueError: a bad argument value.
        RuntimeError: the check failed; nothing is written at `path`.

    Example::

        result = export_tflite(model, "lenet.tflite")
        result.size_bytes, result.gzip_bytes, result.max_abs_error
        print(result.storage_report())
    """
    backend.require_tensorflow("deephoyer_tf.export_tflite (the TFLite converter)")
    flavours.check_model(model)
    path = validation.check_path(path, "path")
    _validate(sparse, quantize, representative_data, op_resolver)
    verbose = validation.check_verbose(verbose)
    atol, rtol = _check_tolerance(atol, "atol"), _check_tolerance(rtol, "rtol")
    min_agreement = validation.check_float(min_agreement, "min_agreement", allow_none=True)
    if min_agreement is not None and min_agreement > 1:
        raise ValueError(
            "Invalid value for argument `min_agreement`. Expected a fraction in "
            f"[0, 1]. Received: min_agreement={min_agreement!r}"
        )
    progress = _Progress(verbose, path)
    copy = _float32_copy(model)
    if copy is not None:
        progress("mixed-precision model: exporting a float32 copy")
        model = copy
    inputs = _Inputs(model)
    _check_representative_type(representative_data, inputs)
    if sample_inputs is not None:
        arrays = inputs.arrays(sample_inputs, "sample_inputs")
    else:
        arrays = _default_samples(inputs, quantize, representative_data)
    if labels is not None:
        labels = np.asarray(labels)
        if labels.ndim == 2 and labels.shape[-1] > 1:
            labels = np.argmax(labels, axis=-1)
        if sample_inputs is None and quantize == "int8" and not callable(representative_data):
            labels = labels[: len(arrays[0])]  # labels of representative_data: its first samples
        if len(labels) != len(arrays[0]):
            raise ValueError(
                "Invalid value for argument `labels`. Expected one label per "
                f"sample checked ({len(arrays[0])}). Received: {len(labels)} labels"
            )
    explicit = atol is not None or rtol is not None
    default_atol, default_rtol = DEFAULT_TOLERANCES[quantize]
    atol = default_atol if atol is None else atol
    rtol = default_rtol if rtol is None else rtol
    if min_agreement is None and quantize == "int8":
        min_agreement = DEFAULT_MIN_AGREEMENT

    progress("converting (one converter run)")
    content = _convert(model, False, quantize, representative_data, inputs)
    progress(f"converted ({len(content):,} bytes dense); choosing each weight's storage")
    content, storage = storage_lib.apply(content, sparse, quantize)
    progress(f"checking the file on {len(arrays[0])} samples")
    reference = _keras_outputs(model, inputs, arrays)
    tolerance = atol + rtol * float(max(np.max(np.abs(r)) for r in reference))
    has_classes = any(r.ndim >= 2 and r.shape[-1] >= 2 for r in reference)
    rule = {"labels": labels, "min_agreement": min_agreement}
    if quantize != "int8" or explicit or not has_classes:
        rule["tolerance"] = tolerance
    check, resolver, default_problem = _verify(
        content, inputs, arrays, reference, op_resolver, rule
    )
    if check.problem is not None:
        raise RuntimeError(
            f"TFLite check failed for {path} (quantize={quantize!r}, "
            f"sparse={sparse!r}, op_resolver={resolver}): {check.problem}, on "
            f"{len(arrays[0])} samples; the file was not written. Relax the check "
            "with atol/rtol (min_agreement for int8), or export with other options."
        )
    atomic.atomic_write_bytes(path, content)  # a temporary file, then a rename
    progress("written")
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
        max_abs_error=check.error,
        tolerance=rule.get("tolerance"),
        sparse_tensors=len(runtime_lib.sparse_tensors(content)),
        quantize=quantize,
        runtime=runtime_lib.interpreter_module()[2],
        op_resolver=resolver,
        default_delegate_error=default_problem,
        stored_dense=tuple(s.name for s in storage
                           if not s.sparse and s.zeros >= storage_lib.CONVERTER_MIN_SPARSITY),
        storage=storage,
        mean_abs_error=check.mean_error,
        agreement=check.agreement,
        accuracy=check.accuracy,
        samples=len(arrays[0]),
        sparse=sparse,
    )
