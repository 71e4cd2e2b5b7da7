"""Size, op resolver and single-sample latency of TFLite files per sparse format.

LeNet-300-100 with 90% of its kernel weights zeroed at random, either one by
one (unstructured, as Hoyer-Square leaves them) or in runs of 16 along the
input axis (the pattern that makes the converter pick block formats), exported
with `deephoyer_tf.export_tflite` as float/dynamic-range, dense/sparse. The
weights are random: this measures formats, not accuracy.

Usage: python bench/bench_tflite_formats.py [--runs 2000] [--out DIR]
"""

import argparse
import os
import tempfile
import time
import warnings

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from deephoyer_tf import export  # noqa: E402
from deephoyer_tf.paper import models  # noqa: E402


def sparsified(block, density=0.1, seed=0):
    model = models.lenet_300_100()
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if hasattr(layer, "kernel"):
            w, b = layer.get_weights()
            rows = -(-w.shape[0] // block)
            keep = np.repeat(rng.random((rows, w.shape[1])) < density, block, axis=0)
            layer.set_weights([w * keep[: w.shape[0]], b])
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="tflite_formats_")
    start = time.time()
    print("| zeros | quantize | sparse | bytes | gzip | sparse tensors | stored dense "
          "| op resolver | XNNPACK | max abs err | median us |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for pattern, block in (("unstructured", 1), ("runs of 16", 16)):
        model = sparsified(block)
        for quantize in (None, "dynamic"):
            for sparse in (False, True):
                path = os.path.join(out, f"b{block}_{quantize}_{sparse}.tflite")
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", RuntimeWarning)
                    r = export.export_tflite(model, path, sparse=sparse, quantize=quantize)
                latency = export.tflite_latency(path, runs=args.runs, op_resolver=r.op_resolver)
                xnnpack = "ok" if r.default_delegate_error is None else (
                    "NaN" if "non-finite" in r.default_delegate_error else
                    "fails to prepare" if "failed to prepare" in r.default_delegate_error
                    else "wrong")
                print(f"| {pattern} | {quantize or 'float'} | {sparse} | {r.size_bytes} "
                      f"| {r.gzip_bytes} | {r.sparse_tensors} | {len(r.stored_dense)} "
                      f"| {r.op_resolver} | {xnnpack} | {r.max_abs_error:.2g} "
                      f"| {latency.median_s * 1e6:.1f} |")
    print(f"\nwall time {time.time() - start:.0f} s; files in {out}")


if __name__ == "__main__":
    main()
