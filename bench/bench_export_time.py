"""Export time of a shrunk ResNet50: the previous export (converter's sparsity, a second
conversion for partial blocks) against the current one (one dense conversion, storage
chosen per tensor), side by side.

ResNet50 (keras.applications, weights=None): 11 of the 2,048 output channels of the last
stage made dead (zero in conv5_block1_0, conv5_block{1,2,3}_3 kernels and biases), every
convolution kernel 70% zero at random, the head zero in 1x4 runs along its input axis
(90%) so that the converter picks 1x4 blocks; then `shrink` (head input 2048 -> 2037,
not a multiple of 4). Each export runs in a fresh process (import and load not timed),
alternating old and new.

Usage: python bench/bench_export_time.py --old /work/main --new . [--rounds 2] [--out DIR]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import json, os, sys, time, warnings
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
from deephoyer_tf._internal import loading
from deephoyer_tf.export import tflite
model = loading.load_model(sys.argv[1], compile=False, safe_mode=True)
calls = []
convert = tflite._convert
tflite._convert = lambda *a, **k: calls.append(1) or convert(*a, **k)
x = __import__("numpy").random.default_rng(0).standard_normal((4, 224, 224, 3)).astype("float32")
start = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    r = tflite.export_tflite(model, sys.argv[2], sample_inputs=x, atol=1e-3, rtol=1e-3)
elapsed = time.perf_counter() - start
print(json.dumps({"seconds": elapsed, "conversions": len(calls), "bytes": r.size_bytes,
                  "sparse_tensors": r.sparse_tensors, "max_abs_error": r.max_abs_error,
                  "warnings": [str(w.message)[:160] for w in caught
                               if issubclass(w.category, RuntimeWarning)]}))
"""


def build(path):
    import keras

    from deephoyer_tf.structure import surgery

    keras.utils.set_random_seed(0)
    model = keras.applications.ResNet50(weights=None)
    rng = np.random.default_rng(0)
    dead = rng.choice(2048, 11, replace=False)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            w, b = layer.get_weights()
            w = w * (rng.random(w.shape) < 0.3)
            if layer.name in ("conv5_block1_0_conv", "conv5_block1_3_conv",
                              "conv5_block2_3_conv", "conv5_block3_3_conv"):
                w[..., dead], b[dead] = 0, 0
            layer.set_weights([w, b])
    head = model.get_layer("predictions")
    w, b = head.get_weights()
    keep = np.repeat(rng.random((w.shape[0] // 4, w.shape[1])) < 0.1, 4, axis=0)
    head.set_weights([w * keep, b])
    small = surgery.shrink(model)
    print(f"shrunk: {model.count_params():,} -> {small.count_params():,} parameters; "
          f"head input {small.get_layer('predictions').get_weights()[0].shape[0]}", flush=True)
    small.save(path)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--old", required=True, help="checkout of the previous version")
    parser.add_argument("--new", default=".", help="checkout of this version")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="export_time_")
    os.makedirs(out, exist_ok=True)
    start = time.time()
    path = os.path.join(out, "resnet50_shrunk.keras")
    if not os.path.exists(path):
        build(path)
    rows = []
    for round_ in range(args.rounds):
        for label, root in (("old", args.old), ("new", args.new)):
            env = dict(os.environ, PYTHONPATH=os.path.abspath(root), TF_CPP_MIN_LOG_LEVEL="3")
            done = subprocess.run(
                [sys.executable, "-c", CHILD, path, os.path.join(out, f"{label}.tflite")],
                capture_output=True, text=True, env=env, cwd=out)
            if done.returncode:
                print(done.stderr[-3000:])
                raise SystemExit(f"{label} export failed")
            result = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append((round_, label, result))
            print(f"round {round_} {label}: {result['seconds']:.1f} s, {result['conversions']} "
                  f"conversions, {result['bytes']:,} bytes, {result['sparse_tensors']} sparse "
                  f"tensors, max abs error {result['max_abs_error']:.2g}, warnings "
                  f"{result['warnings']}", flush=True)
    print("\n| version | export s (median) | conversions | bytes | sparse tensors |")
    print("|---|---|---|---|---|")
    for label in ("old", "new"):
        mine = [r for _, lab, r in rows if lab == label]
        print(f"| {label} | {np.median([r['seconds'] for r in mine]):.1f} | "
              f"{mine[0]['conversions']} | {mine[0]['bytes']:,} | {mine[0]['sparse_tensors']} |")
    print(f"\nwall time {time.time() - start:.0f} s; files in {out}")


if __name__ == "__main__":
    main()
