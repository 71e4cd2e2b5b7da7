"""Fine-tuning step cost of `fix_zeros` (Keras 3): masked vs plain model.

LeNet-5 in its Caffe form (conv 20 5x5, max pool 2, conv 50 5x5, max pool 2,
dense 500 relu, dense 10) on random 28x28x1 data, pruned with
``prune(std_ratio=...)``. Two models with identical weights are compiled the
same way (SGD with momentum); one has its zeros held by `fix_zeros`. Training
steps (`train_on_batch`, the compiled train step) alternate between the two
models, the order flipping every step, so the noise of a shared machine falls
on both alike; the warm-up steps (tracing) are not timed. Prints per-step
medians of wall time and of process CPU time, and their ratio (fixed / plain).

    python bench/bench_fix_zeros.py --steps 300
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import deephoyer_tf  # noqa: E402


def lenet5():
    layers = keras.layers
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            layers.Conv2D(20, 5, name="conv1"),
            layers.MaxPooling2D(2, name="pool1"),
            layers.Conv2D(50, 5, name="conv2"),
            layers.MaxPooling2D(2, name="pool2"),
            layers.Flatten(name="flatten"),
            layers.Dense(500, activation="relu", name="fc1"),
            layers.Dense(10, name="fc2"),
        ]
    )


def make(weights, fixed, args):
    model = lenet5()
    model.set_weights(weights)
    if fixed:
        deephoyer_tf.fix_zeros(model)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=args.jit_compile,
    )
    return model


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--steps", type=int, default=300, help="timed steps per model")
    parser.add_argument("--warmup", type=int, default=10, help="untimed first steps")
    parser.add_argument("--std-ratio", type=float, default=1.0)
    parser.add_argument("--jit-compile", action="store_true")
    args = parser.parse_args()

    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    batches = [
        (
            tf.constant(rng.normal(size=(args.batch, 28, 28, 1)).astype("float32")),
            tf.constant(rng.integers(0, 10, size=(args.batch,))),
        )
        for _ in range(8)
    ]

    source = lenet5()
    report = deephoyer_tf.prune(source, std_ratio=args.std_ratio)
    weights = source.get_weights()
    models = {"plain": make(weights, False, args), "fixed": make(weights, True, args)}

    wall = {name: [] for name in models}
    cpu = {name: [] for name in models}
    for step in range(args.warmup + args.steps):
        x, y = batches[step % len(batches)]
        order = ["plain", "fixed"] if step % 2 == 0 else ["fixed", "plain"]
        for name in order:
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            models[name].train_on_batch(x, y)
            if step >= args.warmup:  # the first steps trace and warm up
                wall[name].append(time.perf_counter() - start_wall)
                cpu[name].append(time.process_time() - start_cpu)

    # The timed model did hold its zeros (kernels are every other weight).
    for before, after in zip(weights[::2], models["fixed"].get_weights()[::2]):
        assert np.all(after[before == 0] == 0)

    print(f"command: python {' '.join(sys.argv)}")
    print(f"date: {time.strftime('%Y-%m-%d %H:%M:%S %Z')}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
          f"TF {tf.__version__}, Keras {keras.__version__}, "
          f"devices {[d.name for d in tf.config.list_logical_devices()]}")
    print(f"LeNet-5 batch {args.batch}, density {report.density:.1%} after "
          f"prune(std_ratio={args.std_ratio}), {args.steps} interleaved steps per model "
          f"after {args.warmup} warm-up steps, jit_compile={args.jit_compile}")
    for label, times in (("wall", wall), ("cpu", cpu)):
        plain, fixed = (statistics.median(times[n]) for n in ("plain", "fixed"))
        paired = statistics.median(f / p for f, p in zip(times["fixed"], times["plain"]) if p > 0)
        print(f"{label:>4}: plain {1e3 * plain:.2f} ms/step, fixed {1e3 * fixed:.2f} ms/step "
              f"(medians); ratio fixed/plain {fixed / plain:.3f}; median paired ratio {paired:.3f}")


if __name__ == "__main__":
    main()
