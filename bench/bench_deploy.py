"""Deployment of the reproduced models: TFLite size and latency, Keras latency.

For each model (a `model.keras` written by `deephoyer-tf reproduce`):

* TFLite files: dense (`sparse=False`), sparse (`sparse=True`: TFLite's sparse
  format), and shrunk + sparse (`deephoyer_tf.shrink` first: dead units
  removed), each checked against the Keras model by `export_tflite`; size,
  gzip size, median single-sample latency (`tflite_latency`, one thread).
* Keras CPU latency of `model(x)` compiled with `tf.function`, dense vs
  shrunk, at batch 1 and 256 (median of timed calls).

    python bench/bench_deploy.py runs/final/lenet-300-100-hs/model.keras runs/final/lenet-5-group-hs/model.keras
"""

import argparse
import os
import pathlib
import statistics
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import deephoyer_tf  # noqa: E402
from deephoyer_tf import export  # noqa: E402


def keras_latency(model, batch, runs):
    x = tf.constant(np.random.default_rng(0).normal(size=(batch,) + tuple(model.input_shape[1:])).astype(np.float32))
    call = tf.function(lambda t: model(t, training=False))
    for _ in range(10):
        call(x)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        call(x).numpy()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--runs", type=int, default=2000, help="timed TFLite invocations")
    parser.add_argument("--keras-runs", type=int, default=200)
    args = parser.parse_args()
    start = time.time()
    rows, keras_rows = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for path in args.models:
            name = pathlib.Path(path).parent.name
            model = keras.models.load_model(path, compile=False)
            shrunk = deephoyer_tf.shrink(model)
            variants = {"dense": (model, False), "sparse": (model, True), "shrunk+sparse": (shrunk, True),
                        "shrunk": (shrunk, False)}
            base = None
            for label, (net, sparse) in variants.items():
                out = os.path.join(tmp, f"{name}-{label}.tflite")
                result = deephoyer_tf.export_tflite(net, out, sparse=sparse)
                latency = export.tflite_latency(out, runs=args.runs, op_resolver=result.op_resolver).median_s
                if base is None:
                    base = (result.size_bytes, latency)
                rows.append(
                    f"| {name} | {label} | {result.size_bytes:,} | {result.gzip_bytes:,} | "
                    f"{base[0] / result.size_bytes:.1f}x | {latency * 1e6:.1f} | {base[1] / latency:.1f}x | "
                    f"{result.max_abs_error:.1e} |"
                )
            for batch in (1, 256):
                dense_s = keras_latency(model, batch, args.keras_runs)
                shrunk_s = keras_latency(shrunk, batch, args.keras_runs)
                keras_rows.append(
                    f"| {name} | {batch} | {dense_s * 1e3:.3f} | {shrunk_s * 1e3:.3f} | {dense_s / shrunk_s:.1f}x |"
                )
    print("| model | TFLite variant | bytes | gzip bytes | smaller | median us | faster | max abs err |")
    print("|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    print()
    print("| model | batch | Keras dense ms | Keras shrunk ms | faster |")
    print("|---|---|---|---|---|")
    print("\n".join(keras_rows))
    print(f"\nwall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
