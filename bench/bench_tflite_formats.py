"""Size, op resolver and single-sample latency of TFLite files per sparse format.

LeNet-300-100 with 90% of its kernel weights zeroed at random, either one by
one (unstructured, as Hoyer-Square leaves them) or in runs of 16 along the
input axis (the pattern that makes the converter pick block formats), exported
with `deephoyer_tf.export_tflite` as float/dynamic-range, dense/sparse. The
weights are random: this measures formats, not accuracy.

int8 section (``--int8``): the trained MNIST LeNets of bench/results/paper
(Hoyer-Square and Group-HS), as saved and after `shrink`, and a small CNN with
dead filters (random weights, half of its filters zero, 70% of the rest's
weights zero, shrunk), exported full-integer with sparse=False (dense int8),
sparse="auto" (the default) and sparse=True (the converter's rule), calibrated
on 500 MNIST validation images and checked on 1,000 test images (top-1
agreement with the Keras model, accuracy). Latency: one thread, the file's
checked op resolver, each file timed in alternation with its dense twin.

Usage: python bench/bench_tflite_formats.py [--runs 2000] [--out DIR] [--int8-only]
       [--data-dir /work/shared/data/mnist]
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


def small_cnn(seed=0):
    """A small CNN of the kind a user designs, with dead filters and sparse weights."""
    import keras

    keras.utils.set_random_seed(seed)
    model = keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Rescaling(1 / 255),
        keras.layers.Conv2D(16, 3, activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu", name="fc1"),
        keras.layers.Dense(10, name="fc2"),
    ], name="small_cnn")
    rng = np.random.default_rng(seed)
    for name in ("conv1", "conv2", "fc1"):
        layer = model.get_layer(name)
        w, b = layer.get_weights()
        w = w * (rng.random(w.shape) < 0.3)
        w[..., ::2], b[::2] = 0, 0  # half of the filters/units dead
        layer.set_weights([w, b])
    return model


def _paired_latency(path, dense_path, resolver, dense_resolver, runs):
    """Median latency of two files, timed in 4 alternating rounds (us)."""
    a, b = [], []
    for _ in range(4):
        a.append(export.tflite_latency(path, runs=runs // 4, op_resolver=resolver).median_s)
        b.append(export.tflite_latency(dense_path, runs=runs // 4,
                                       op_resolver=dense_resolver).median_s)
    return float(np.median(a)) * 1e6, float(np.median(b)) * 1e6


def int8_rows(args, out):
    from deephoyer_tf.paper import datasets
    from deephoyer_tf.paper import evaluate
    from deephoyer_tf.paper import preprocessing
    from deephoyer_tf.structure import surgery

    data = datasets.load_mnist(args.data_dir)
    calib = preprocessing.raw_pixels(data.x_val[:500], data.mean, data.std)
    test = preprocessing.raw_pixels(data.x_test[:1000], data.mean, data.std)
    labels = data.y_test[:1000]
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = []
    for run in ("lenet-300-100-hs", "lenet-300-100-group-hs", "lenet-5-hs", "lenet-5-group-hs"):
        model = evaluate.load(os.path.join(here, "results", "paper", run, "model.keras"))
        candidates.append((run, model))
        candidates.append((run + " shrunk", surgery.shrink(model)))
    candidates.append(("small CNN (random, dead filters) shrunk", surgery.shrink(small_cnn())))
    print("\n| model | int8 storage | bytes | gzip | sparse tensors | op resolver | XNNPACK "
          "| RuntimeWarning | agreement | accuracy | median us (1 thread) | dense int8 us | ratio |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for name, model in candidates:
        dense_path = os.path.join(out, f"{name.replace(' ', '_')}_dense.tflite")
        base = dict(quantize="int8", representative_data=calib, sample_inputs=test, labels=labels,
                    min_agreement=0.0)
        dense = export.export_tflite(model, dense_path, sparse=False, **base)
        for sparse in (False, "auto", True):
            path = os.path.join(out, f"{name.replace(' ', '_')}_{sparse}.tflite")
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", RuntimeWarning)
                r = export.export_tflite(model, path, sparse=sparse, **base)
            warned = any(issubclass(w.category, RuntimeWarning) for w in caught)
            mine, twin = _paired_latency(path, dense_path, r.op_resolver, dense.op_resolver,
                                         args.runs)
            formats = sorted({s.format for s in r.storage if s.sparse}) or ["dense"]
            print(f"| {name} | {sparse!r}: {', '.join(formats)} | {r.size_bytes:,} "
                  f"| {r.gzip_bytes:,} | {r.sparse_tensors} | {r.op_resolver} "
                  f"| {'ok' if r.default_delegate_error is None else 'fails'} "
                  f"| {'yes' if warned else 'no'} | {r.agreement:.1%} | {r.accuracy:.1%} "
                  f"| {mine:.1f} | {twin:.1f} | {twin / mine:.2f} |")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=2000)
    parser.add_argument("--out", default=None)
    parser.add_argument("--int8-only", action="store_true", help="only the int8 section")
    parser.add_argument("--data-dir", default=os.environ.get("DEEPHOYER_DATA_DIR"),
                        help="MNIST folder for the int8 section")
    args = parser.parse_args()
    out = args.out or tempfile.mkdtemp(prefix="tflite_formats_")
    start = time.time()
    if args.int8_only:
        int8_rows(args, out)
        print(f"\nwall time {time.time() - start:.0f} s; files in {out}")
        return
    print("| zeros | quantize | sparse | bytes | gzip | sparse tensors | stored dense "
          "| op resolver | XNNPACK | max abs err | median us |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for pattern, block in (("unstructured", 1), ("runs of 16", 16)):
        model = sparsified(block)
        for quantize in (None, "dynamic"):
            for sparse in (False, "auto", True):
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
    int8_rows(args, out)
    print(f"\nwall time {time.time() - start:.0f} s; files in {out}")


if __name__ == "__main__":
    main()
