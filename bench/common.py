"""Helpers shared by the Fashion-MNIST benchmark scripts (bench_mobilenet_fashion, bench_vit_fashion).

Training and evaluation steps that must be identical across the methods and
scripts compared, and the per-stage JSON results (``OUT/<stage>.json``, with
the command, date, wall time and machine that produced them).
"""

import json
import os
import platform
import sys
import time

import numpy as np


def compile_(model, module, lr, steps):
    """Adam with a cosine-decayed learning rate over `steps`, logits cross-entropy, accuracy."""
    schedule = module.optimizers.schedules.CosineDecay(lr, max(steps, 1))
    model.compile(
        optimizer=module.optimizers.Adam(schedule),
        loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def steps(args, n, epochs):
    return epochs * int(np.ceil(n / args.batch_size))


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def load(out, stage):
    return json.loads((out / f"{stage}.json").read_text())


def save(out, stage, result, started):
    result.update(stage=stage, wall_seconds=round(time.time() - started, 1),
                  date=time.strftime("%Y-%m-%d"), machine=f"{platform.machine()}, {os.cpu_count()} cores",
                  command=" ".join([sys.executable.split("/")[-1]] + sys.argv))
    (out / f"{stage}.json").write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2), flush=True)


def export(model, path, sparse):
    import deephoyer_tf

    result = deephoyer_tf.export_tflite(model, path, sparse=sparse)
    return {"tflite": str(path), "tflite_bytes": result.size_bytes, "op_resolver": result.op_resolver}


def without_penalties(model):
    """A copy of `model` (Keras 3) with the same weights and no weight regularizers."""
    import keras

    from deephoyer_tf.paper import reproduce

    plain = keras.models.clone_model(model, clone_function=reproduce._without_regularizers)
    plain.set_weights(model.get_weights())
    return plain
