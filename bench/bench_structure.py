"""Cost of `sparsity_report` and `shrink` on `keras.applications` models, and its growth with depth.

Each model is built with random weights (``weights=None``, with its top);
30% of the filters of every convolution and Dense layer (depthwise and
separable kernels included) are zeroed, their biases made nonzero, so that
`shrink` has units to remove and constants to fold. Then, timed:
`sparsity_report(model)` and `shrink(model)` (which includes its own
analysis). The outputs of the shrunk model are compared with the original's
on two random images (relative error: max |difference| / max |output|).

The table lists parameters, layers, kernel layers, the two times (wall
seconds, and process CPU seconds of all threads, steadier on a shared
machine), the parameters after `shrink` and the error; then the growth with
depth: seconds per 100 layers, and each model's time against the first
model's, beside the ratio of their layer counts (ResNet50, 101 and 152 are
the same blocks at three depths).

    nice -n 10 python bench/bench_structure.py
    nice -n 10 python bench/bench_structure.py --models Xception ConvNeXtTiny
"""

import argparse
import os
import platform
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import deephoyer_tf  # noqa: E402
from deephoyer_tf.structure import registry  # noqa: E402

DEFAULT_MODELS = (
    "ResNet50",
    "ResNet101",
    "ResNet152",
    "MobileNetV2",
    "DenseNet121",
    "Xception",
    "NASNetMobile",
    "EfficientNetV2S",
    "ConvNeXtTiny",
)


def kill_filters(model, fraction, seed):
    """Zeroes `fraction` of the output units of every kernel layer; biases made nonzero.

    The last kernel of each layer is cut along its output units: a Dense or
    Conv filter, a SeparableConv's pointwise filter, a DepthwiseConv's
    channel (all its multiplier outputs).
    """
    rng = np.random.default_rng(seed)
    for layer in registry.kernel_layers(model):
        spec = registry.kernel_specs(layer)[-1]
        variable = registry.kernel_variable(layer, spec)
        kernel = np.array(variable.numpy())
        axis = -2 if spec.layout == "depthwise" else -1
        units = kernel.shape[axis]
        dead = rng.choice(units, int(round(fraction * units)), replace=False)
        if axis == -2:
            kernel[..., dead, :] = 0
        else:
            kernel[..., dead] = 0
        variable.assign(kernel)
        bias = getattr(layer, "bias", None) if getattr(layer, "use_bias", False) else None
        if bias is not None:
            bias.assign(rng.normal(0, 0.1, tuple(bias.shape)).astype("float32"))


def warm_up():
    """One report and shrink of a small model: one-time costs (imports, first TF ops) out of the table."""
    x = keras.Input((8, 8, 3))
    h = keras.layers.Conv2D(4, 3, padding="same")(x)
    model = keras.Model(x, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(h)))
    deephoyer_tf.sparsity_report(model)
    deephoyer_tf.shrink(model)


def time_model(name, fraction, seed):
    keras.utils.set_random_seed(seed)
    keras.backend.clear_session()
    model = getattr(keras.applications, name)(weights=None)
    kill_filters(model, fraction, seed)
    start, cpu = time.perf_counter(), time.process_time()
    report = deephoyer_tf.sparsity_report(model)
    report_s, report_cpu = time.perf_counter() - start, time.process_time() - cpu
    start, cpu = time.perf_counter(), time.process_time()
    small = deephoyer_tf.shrink(model)
    shrink_s, shrink_cpu = time.perf_counter() - start, time.process_time() - cpu
    shape = (2,) + tuple(model.input_shape[1:])
    x = np.random.default_rng(seed).uniform(0, 255, shape).astype("float32")
    y, z = np.asarray(model(x)), np.asarray(small(x))
    error = float(np.abs(y - z).max() / max(np.abs(y).max(), 1e-30))
    summary = small.shrink_summary
    return {
        "model": name,
        "params": model.count_params(),
        "layers": len(model.layers),
        "kernel_layers": len(report.layers),
        "report_s": report_s,
        "shrink_s": shrink_s,
        "report_cpu": report_cpu,
        "shrink_cpu": shrink_cpu,
        "params_after": small.count_params(),
        "rel_error": error,
        "kept_whole": len(summary.kept_whole),
        "grouped": len(summary.kept_for_groups),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(DEFAULT_MODELS))
    parser.add_argument("--fraction", type=float, default=0.3, help="share of dead filters")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    started = time.time()
    warm_up()
    rows = []
    for name in args.models:
        row = time_model(name, args.fraction, args.seed)
        rows.append(row)
        print(f"{name}: report {row['report_s']:.2f} s, shrink {row['shrink_s']:.2f} s", flush=True)
    print()
    print("| model | params | layers | kernel layers | report s (CPU s) | shrink s (CPU s) "
          "| params after shrink | rel. error | kept whole | s per 100 layers (report / shrink) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        per = 100 / r["layers"]
        print(
            f"| {r['model']} | {r['params']:,} | {r['layers']} | {r['kernel_layers']} | "
            f"{r['report_s']:.2f} ({r['report_cpu']:.2f}) | {r['shrink_s']:.2f} "
            f"({r['shrink_cpu']:.2f}) | {r['params_after']:,} "
            f"({r['params_after'] / r['params']:.2f}x) | {r['rel_error']:.1e} | {r['kept_whole']} | "
            f"{r['report_s'] * per:.2f} / {r['shrink_s'] * per:.2f} |"
        )
    if len(rows) > 1:
        base = rows[0]
        print()
        print(f"Growth with depth (against {base['model']}; CPU seconds, wall in brackets):")
        for r in rows[1:]:
            print(
                f"  {r['model']}: {r['layers'] / base['layers']:.2f}x layers, "
                f"{r['report_cpu'] / base['report_cpu']:.2f}x report "
                f"({r['report_s'] / base['report_s']:.2f}x), "
                f"{r['shrink_cpu'] / base['shrink_cpu']:.2f}x shrink "
                f"({r['shrink_s'] / base['shrink_s']:.2f}x)"
            )
    print(
        f"\nkeras {keras.__version__}, deephoyer_tf {deephoyer_tf.__version__}, "
        f"{platform.machine()}, {os.cpu_count()} CPUs; wall time {time.time() - started:.0f} s"
    )


if __name__ == "__main__":
    main()
