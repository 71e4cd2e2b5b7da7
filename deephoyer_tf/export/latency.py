"""Single-sample latency of a ``.tflite`` file, as a device would run it."""

from __future__ import annotations

import dataclasses
import statistics
import time
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import validation
from deephoyer_tf.export import runtime as runtime_lib

if TYPE_CHECKING:
    import os


@dataclasses.dataclass(frozen=True)
class LatencyResult:
    """Single-sample latency of a ``.tflite`` file, in seconds.

    Attributes:
        median_s: median over the timed invocations.
        p90_s: 90th percentile.
        runs: number of timed invocations.
        num_threads: interpreter threads.
        op_resolver: the op resolver used.
        runtime: ``"ai_edge_litert"`` or ``"tf.lite"``.
    """

    median_s: float
    p90_s: float
    runs: int
    num_threads: int
    op_resolver: str
    runtime: str




def tflite_latency(
    path: str | os.PathLike,
    *,
    runs: int = 1000,
    warmup: int = 100,
    num_threads: int = 1,
    op_resolver: str = "auto",
    seed: int | None = 0,
) -> LatencyResult:
    """Median single-sample latency of a ``.tflite`` file.

    Invokes the interpreter `warmup` times, then times `runs` invocations one
    by one (`time.perf_counter` around `invoke` only, on one fixed random
    input of batch size 1).

    Args:
        path: the ``.tflite`` file.
        runs: timed invocations, >= 1.
        warmup: untimed invocations first, >= 0.
        num_threads: interpreter threads, >= 1.
        op_resolver: as in `export_tflite`; ``"auto"`` applies
            `auto_op_resolver`. Pass `ExportResult.op_resolver` to time what
            was checked.
        seed: seed of the random input.

    Returns:
        A `LatencyResult`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: a bad argument value.

    Example::

        tflite_latency("lenet.tflite").median_s * 1e6  # microseconds
    """
    path = validation.check_path(path, "path")
    if not path.is_file():
        raise FileNotFoundError(f"TFLite file not found: {path}")
    runs = validation.check_int(runs, "runs", minimum=1)
    warmup = validation.check_int(warmup, "warmup", minimum=0)
    num_threads = validation.check_int(num_threads, "num_threads", minimum=1)
    runtime_lib.check_op_resolver(op_resolver)
    content = path.read_bytes()
    resolver = runtime_lib.auto_op_resolver(content) if op_resolver == "auto" else op_resolver
    it = runtime_lib.interpreter(content, resolver, num_threads)
    it.allocate_tensors()
    (inp,) = it.get_input_details()
    x = np.random.default_rng(seed).standard_normal(inp["shape"]).astype(np.float32)
    if np.issubdtype(inp["dtype"], np.integer):
        info = np.iinfo(inp["dtype"])
        x = np.clip(np.round(x * 32), info.min, info.max)
    it.set_tensor(inp["index"], x.astype(inp["dtype"]))
    for _ in range(warmup):
        it.invoke()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        it.invoke()
        times.append(time.perf_counter() - start)
    return LatencyResult(
        median_s=statistics.median(times),
        p90_s=float(np.percentile(times, 90)),
        runs=runs,
        num_threads=num_threads,
        op_resolver=resolver,
        runtime=runtime_lib.interpreter_module()[2],
    )
