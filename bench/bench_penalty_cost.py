"""Cost of the DeepHoyer penalties alone on ResNet-50's kernels, per step.

Times, in a compiled `tf.function`, the value and gradient of the sum of the
penalties over every Conv2D/Dense kernel of
`keras.applications.ResNet50(weights=None)` (25.5M kernel weights), with no
data: the fixed cost that each replica pays per training step, whatever its
batch. For comparison it also times one unregularized training step
(forward, backward, SGD update) at batch `--batch`, so the data part per image
can be estimated. Rounds interleave the configurations; medians of wall time
and of process CPU time (all threads; steadier on a shared machine) are
reported.

    python bench/bench_penalty_cost.py --batch 8 --image-size 224 --repeats 5 --rounds 3
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

import deephoyer_tf  # noqa: E402

PENALTIES = {
    "L1": lambda: keras.regularizers.L1(1e-5),
    "HoyerSquare": lambda: deephoyer_tf.HoyerSquare(1e-5),
    "GroupHoyerSquare": lambda: deephoyer_tf.GroupHoyerSquare(1e-5),
}


def penalty_step(kernels, regularizer):
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            total = tf.add_n([regularizer(k) for k in kernels])
        grads = tape.gradient(total, kernels)
        return total, tf.add_n([tf.reduce_sum(g) for g in grads])

    return step


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    start = time.time()
    keras.utils.set_random_seed(0)
    shape = (args.image_size, args.image_size, 3)
    model = keras.applications.ResNet50(weights=None, input_shape=shape, classes=1000)
    kernels = [layer.kernel.value for layer in model.layers
               if type(layer).__name__ in ("Conv2D", "Dense")]
    n_weights = sum(int(np.prod(k.shape)) for k in kernels)
    steps = {name: penalty_step(kernels, make()) for name, make in PENALTIES.items()}
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                  loss="sparse_categorical_crossentropy")
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch,) + shape).astype(np.float32)
    y = rng.integers(0, 1000, args.batch)

    def train_step():
        model.train_on_batch(x, y)

    calls = {**{name: (lambda s=s: [t.numpy() for t in s()]) for name, s in steps.items()},
             f"train step (batch {args.batch})": train_step}
    for call in calls.values():  # trace and warm up
        call()
        call()
    times = {name: [] for name in calls}
    cpu = {name: [] for name in calls}
    for _ in range(args.rounds):
        for name, call in calls.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(args.repeats):
                call()
            times[name].append((time.perf_counter() - t0) / args.repeats)
            cpu[name].append((time.process_time() - c0) / args.repeats)
    print(f"ResNet-50 kernels: {len(kernels)} tensors, {n_weights:,} weights; "
          f"machine={platform.machine()} cpus={os.cpu_count()}")
    print(f"{'computation':<26}{'wall ms':>12}{'CPU ms':>12}")
    for name, values in times.items():
        print(f"{name:<26}{1000 * statistics.median(values):>12.2f}"
              f"{1000 * statistics.median(cpu[name]):>12.2f}")
    print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
