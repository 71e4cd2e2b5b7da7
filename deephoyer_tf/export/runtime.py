"""Running TFLite files: the LiteRT interpreter (`tf.lite` without it) and its op resolvers.

TF 2.21's `tf.lite.Interpreter` is deprecated in favour of LiteRT
(`ai-edge-litert`); the interpreter is taken from LiteRT when it is installed.
`auto_op_resolver` works around a TF 2.21 / LiteRT 2.3 XNNPACK bug with
integer sparse tensors (see `deephoyer_tf.export.tflite`).
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import validation

if TYPE_CHECKING:
    import os
    from typing import Any

    # A `tf.lite.Interpreter` or an `ai_edge_litert.interpreter.Interpreter`.
    Interpreter = Any

OP_RESOLVERS = ("auto", "BUILTIN", "BUILTIN_WITHOUT_DEFAULT_DELEGATES", "BUILTIN_REF")


def interpreter_module():
    """The interpreter module (LiteRT when installed) and its name."""
    try:
        from ai_edge_litert import interpreter as litert

        return litert.Interpreter, litert.OpResolverType, "ai_edge_litert"
    except ImportError:
        import tensorflow as tf

        return tf.lite.Interpreter, tf.lite.experimental.OpResolverType, "tf.lite"


def interpreter(content, op_resolver, num_threads=None):
    cls, resolvers, _ = interpreter_module()
    kwargs = {"experimental_op_resolver_type": getattr(resolvers, op_resolver)}
    if num_threads is not None:
        kwargs["num_threads"] = num_threads
    with warnings.catch_warnings():
        # tf.lite.Interpreter warns that it is deprecated in favour of LiteRT.
        warnings.simplefilter("ignore", UserWarning)
        return cls(model_content=content, **kwargs)


def sparse_tensors(content):
    """Details (`Interpreter.get_tensor_details`) of the tensors stored sparse."""
    details = interpreter(content, "BUILTIN_WITHOUT_DEFAULT_DELEGATES").get_tensor_details()
    return [d for d in details if d.get("sparsity_parameters")]


def is_integer(detail):
    return np.issubdtype(np.dtype(detail["dtype"]), np.integer)


def load_interpreter(
    path: str | os.PathLike, op_resolver: str = "auto", num_threads: int | None = None
) -> Interpreter:
    """A LiteRT interpreter (`tf.lite.Interpreter` without LiteRT) for a file.

    Args:
        path: the ``.tflite`` file.
        op_resolver: one of `OP_RESOLVERS`; ``"auto"`` applies
            `auto_op_resolver`.
        num_threads: interpreter threads, or None for the default.

    Returns:
        An interpreter, tensors not yet allocated.
    """
    path = validation.check_path(path, "path")
    if not path.is_file():
        raise FileNotFoundError(f"TFLite file not found: {path}")
    check_op_resolver(op_resolver)
    content = path.read_bytes()
    resolver = auto_op_resolver(content) if op_resolver == "auto" else op_resolver
    return interpreter(content, resolver, num_threads)


def check_op_resolver(op_resolver):
    if op_resolver not in OP_RESOLVERS:
        raise ValueError(
            "Invalid value for argument `op_resolver`. Expected one of "
            f"{OP_RESOLVERS}. Received: op_resolver={op_resolver!r}"
        )


def auto_op_resolver(content: bytes) -> str:
    """The op resolver ``"auto"`` stands for, for the file bytes `content`.

    ``"BUILTIN_WITHOUT_DEFAULT_DELEGATES"`` when the file holds integer tensors
    in sparse format (XNNPACK mishandles them in TF 2.21 / LiteRT 2.3, see the
    module docstring), else ``"BUILTIN"`` (the interpreter's default, XNNPACK).
    """
    integer = [d for d in sparse_tensors(content) if is_integer(d)]
    return "BUILTIN_WITHOUT_DEFAULT_DELEGATES" if integer else "BUILTIN"


def run(content, inputs, op_resolver, num_threads=None):
    """Runs the file on each sample of `inputs` (batch 1); returns the outputs."""
    it = interpreter(content, op_resolver, num_threads)
    it.allocate_tensors()
    (inp,), (out,) = it.get_input_details(), it.get_output_details()
    outputs = []
    for sample in inputs:
        x = sample[np.newaxis]
        scale, zero_point = inp["quantization"]
        if np.issubdtype(inp["dtype"], np.integer) and scale:
            x = np.round(x / scale + zero_point)
        it.set_tensor(inp["index"], x.astype(inp["dtype"]))
        it.invoke()
        y = it.get_tensor(out["index"]).astype(np.float64)
        scale, zero_point = out["quantization"]
        if np.issubdtype(out["dtype"], np.integer) and scale:
            y = (y - zero_point) * scale
        outputs.append(y[0])
    return np.stack(outputs)




def run_signature(content, inputs, op_resolver, num_threads=None):
    """Runs a file with several inputs/outputs through its signature runner.

    `inputs` maps the signature's input names to arrays (first axis:
    samples); each sample runs with batch size 1. Returns one array per
    output, in the order ``output_0``, ``output_1``... (the flattened order
    of the Keras model's outputs).
    """
    it = interpreter(content, op_resolver, num_threads)
    runner = it.get_signature_runner()
    count = len(next(iter(inputs.values())))
    outputs = None
    for i in range(count):
        result = runner(**{name: np.asarray(a[i : i + 1]) for name, a in inputs.items()})
        keys = sorted(result, key=lambda k: int(k.rsplit("_", 1)[-1]) if k.rsplit("_", 1)[-1].isdigit() else k)
        if outputs is None:
            outputs = [[] for _ in keys]
        for slot, key in enumerate(keys):
            outputs[slot].append(np.asarray(result[key], dtype=np.float64)[0])
    return [np.stack(o) for o in outputs]
