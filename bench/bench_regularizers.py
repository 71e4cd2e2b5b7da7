"""Cost of the DeepHoyer penalties: training step time with and without them.

Times `train_on_batch` on random data for LeNet-5 (Caffe form) and
`keras.applications.ResNet50(weights=None)` with, on every Dense/Conv kernel:
no regularizer, `keras.regularizers.L1`, `HoyerSquare`, `GroupHoyerSquare`.
Configurations are interleaved step by step (rotating order) so that drifting
machine load affects them alike; the median step time (wall and process CPU)
per configuration is reported with its ratio to the unregularized step.

    python bench/bench_regularizers.py --model lenet-5 --batch 128 --steps 20 --rounds 10
    python bench/bench_regularizers.py --model resnet50 --batch 8 --image-size 224 --steps 3 --rounds 3

On another Keras backend: ``KERAS_BACKEND=jax python bench/bench_regularizers.py ...``
(``jax`` or ``torch``; each backend in its own process, configurations
interleaved within it).
"""

import argparse
import os
import platform
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402

import deephoyer_tf  # noqa: E402
import deephoyer_tf.paper.models  # noqa: E402

CONFIGS = {
    "none": lambda: None,
    "L1": lambda: keras.regularizers.L1(1e-5),
    "HoyerSquare": lambda: deephoyer_tf.HoyerSquare(1e-5),
    "GroupHoyerSquare": lambda: deephoyer_tf.GroupHoyerSquare(1e-5),
}


def build(name, image_size):
    if name == "lenet-5":
        return deephoyer_tf.paper.models.lenet_5(), (28, 28, 1), 10
    if name == "resnet50":
        shape = (image_size, image_size, 3)
        return keras.applications.ResNet50(weights=None, input_shape=shape, classes=1000), shape, 1000
    raise ValueError(f"unknown model {name!r}")


def prepare(args, config):
    keras.utils.set_random_seed(0)
    base, shape, classes = build(args.model, args.image_size)
    regularizer = CONFIGS[config]()
    model = base if regularizer is None else deephoyer_tf.regularize(base, regularizer)
    model.compile(
        optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=args.model == "lenet-5"),
        # "auto": Keras' default per backend (XLA off on a CPU-only TensorFlow,
        # jax.jit on JAX, eager PyTorch).
        jit_compile=True if args.jit else "auto",
    )
    rng = np.random.default_rng(0)
    x = rng.normal(size=(args.batch,) + shape).astype(np.float32)
    y = rng.integers(0, classes, args.batch)
    for _ in range(2):  # trace and warm up
        model.train_on_batch(x, y)
    return model, x, y


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=["lenet-5", "resnet50"], default="lenet-5")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--steps", type=int, default=20, help="steps timed per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jit", action="store_true", help="compile with jit_compile=True")
    args = parser.parse_args()

    start = time.time()
    prepared = {name: prepare(args, name) for name in CONFIGS}
    wall = {name: [] for name in CONFIGS}
    cpu = {name: [] for name in CONFIGS}
    names = list(CONFIGS)
    for step in range(args.steps * args.rounds):
        # Every configuration once per step, in a rotating order: machine
        # load drifts alike over all of them.
        order = names[step % len(names):] + names[: step % len(names)]
        for name in order:
            model, x, y = prepared[name]
            t0, c0 = time.perf_counter(), time.process_time()
            model.train_on_batch(x, y)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
    jit = prepared["none"][0].jit_compile
    print(f"model={args.model} batch={args.batch} backend={keras.backend.backend()} jit_compile={jit} "
          f"machine={platform.machine()} cpus={os.cpu_count()}")
    print(f"{args.steps * args.rounds} steps per configuration, interleaved step by step. Median step "
          "time; CPU = process CPU time (all threads), less sensitive than wall time to other load.")
    print(f"{'regularizer':<18}{'wall ms':>10}{'ratio':>8}{'CPU ms':>10}{'ratio':>8}")
    wall_base, cpu_base = statistics.median(wall["none"]), statistics.median(cpu["none"])
    for name in CONFIGS:
        w, c = statistics.median(wall[name]), statistics.median(cpu[name])
        print(f"{name:<18}{1000 * w:>10.2f}{w / wall_base:>8.3f}{1000 * c:>10.2f}{c / cpu_base:>8.3f}")
    print(f"wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
