"""MobileNetV2 on Fashion-MNIST: dense, Group-HS + shrink, Hoyer-Square sparse, and baselines.

One stage per process (TFMOT's import switches tf.keras to Keras 2, so its
stage runs alone); each stage writes ``OUT/<stage>.json`` and is skipped when
that file exists, so an interrupted run continues where it stopped::

    for s in dense ghs hs gl smp tfmot latency table; do
        python bench/bench_mobilenet_fashion.py --stage $s --out runs/mnv2-fashion || break
    done

Protocol: MobileNetV2 (``keras.applications``, ``weights=None``, width 0.35,
32x32x1 inputs: Fashion-MNIST padded by 2 pixels). Choices (the std ratio of
the pruning threshold, the structured pruning fraction) are made on the
validation split (the last 5,000 training images) or by MACs; the test split is
read once per final model, at the end of its stage. Strengths were set once,
not tuned (no sweep fits this machine's budget).

Stages:
* ``dense``: Adam, cosine-decayed learning rate.
* ``ghs``: Group-HS (``GroupHoyerSquare``; depthwise kernels get
  ``ChannelGroups``) from the dense model, prune (std ratio chosen on
  validation), fine-tune with zeros fixed, ``shrink``, dense TFLite file.
* ``hs``: Hoyer-Square, prune, fine-tune, sparse TFLite file.
* ``gl``: group lasso, as ``ghs``.
* ``smp``: structured magnitude pruning (Li et al. 2017): the filters of each
  standard convolution with the smallest L2 norms zeroed, the fraction chosen
  to match Group-HS's MACs, fine-tuned with zeros fixed, ``shrink``.
* ``tfmot``: TFMOT ``prune_low_magnitude`` (tf_keras) to Hoyer-Square's
  sparsity on the same layers, polynomial decay, same epoch budget.
* ``latency``: every TFLite file timed in one process, single thread,
  interleaved rounds, medians.
* ``table``: the Markdown table.
"""

import argparse
import json
import os
import pathlib
import platform
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

STAGES = ("dense", "ghs", "hs", "gl", "smp", "tfmot", "latency", "table")
KERNEL_TYPES = ["Conv2D", "DepthwiseConv2D", "Dense"]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=STAGES, required=True)
    p.add_argument("--out", default="runs/mnv2-fashion")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "fashion-mnist"))
    p.add_argument("--alpha", type=float, default=0.35)
    p.add_argument("--dense-epochs", type=int, default=12)
    p.add_argument("--regularize-epochs", type=int, default=8)
    p.add_argument("--finetune-epochs", type=int, default=4)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=None, help="first N training images (quick)")
    p.add_argument("--ghs", type=float, default=1e-3)
    p.add_argument("--hs", type=float, default=1e-4)
    p.add_argument("--gl", type=float, default=1e-4)
    p.add_argument("--tolerance", type=float, default=0.5, help="validation points a ratio may cost")
    p.add_argument("--runs", type=int, default=300, help="timed TFLite invocations per round")
    return p.parse_args(argv)


def data(args):
    from deephoyer_tf.paper.datasets import load_fashion_mnist

    d = load_fashion_mnist(args.data_dir)

    def pad(x):
        return np.pad(x, ((0, 0), (2, 2), (2, 2), (0, 0)))

    x_train, y_train = pad(d.x_train), d.y_train
    if args.train_subset:
        x_train, y_train = x_train[: args.train_subset], y_train[: args.train_subset]
    return x_train, y_train, pad(d.x_val), d.y_val, pad(d.x_test), d.y_test


def build(module, args):
    """MobileNetV2 from `module.applications`, its BatchNormalization momentum 0.9.

    With the default momentum (0.999) and a model trained from scratch for a
    few epochs, the moving statistics lag the weights so far behind that the
    inference-mode model predicts one class (validation accuracy 10.3% after 8
    epochs here, at 90% training accuracy).
    """
    model = module.applications.MobileNetV2(
        input_shape=(32, 32, 1), alpha=args.alpha, weights=None, classes=10,
        classifier_activation=None,
    )
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            layer.momentum = 0.9
    return model


def compile_(model, module, lr, steps):
    schedule = module.optimizers.schedules.CosineDecay(lr, max(steps, 1))
    model.compile(
        optimizer=module.optimizers.Adam(schedule),
        loss=module.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )


def accuracy(model, x, y):
    logits = model.predict(x, batch_size=1000, verbose=0)
    return float(np.mean(np.argmax(logits, -1) == y))


def steps(args, n, epochs):
    return epochs * int(np.ceil(n / args.batch_size))


def report_of(model):
    import deephoyer_tf

    r = deephoyer_tf.sparsity_report(model)
    return {"nonzero_weights": r.nonzero_weights, "total_weights": r.total_weights,
            "macs": r.macs, "dense_macs": r.dense_macs, "params": int(model.count_params())}


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


def stage_dense(args, out):
    import keras

    x, y, xv, yv, xt, yt = data(args)
    keras.utils.set_random_seed(0)
    model = build(keras, args)
    compile_(model, keras, 1e-3, steps(args, len(x), args.dense_epochs))
    model.fit(x, y, batch_size=args.batch_size, epochs=args.dense_epochs, verbose=2,
              validation_data=(xv, yv))
    model.save(out / "dense.keras")
    return {"validation_accuracy": accuracy(model, xv, yv), "test_accuracy": accuracy(model, xt, yt),
            **report_of(model), **export(model, out / "dense.tflite", sparse=False)}


def choose_ratio(model, xv, yv, reference, tolerance, log):
    """Largest std ratio whose pruned validation accuracy stays within `tolerance` points."""
    import deephoyer_tf

    saved = model.get_weights()
    chosen = None
    for ratio in (1.0, 0.75, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02):
        deephoyer_tf.prune(model, std_ratio=ratio, layer_types=KERNEL_TYPES)
        acc = accuracy(model, xv, yv)
        model.set_weights(saved)
        log(f"[select] std_ratio {ratio}: validation {acc:.4f} (reference {reference:.4f})")
        if acc >= reference - tolerance / 100:
            chosen = ratio
            break
    if chosen is None:
        chosen = 0.02
        log("[select] no ratio within tolerance: the smallest, 0.02 (reported)")
    return chosen


def finetune(model, x, y, xv, yv, args, epochs):
    import keras

    import deephoyer_tf

    deephoyer_tf.fix_zeros(model, layer_types=KERNEL_TYPES)
    compile_(model, keras, 3e-4, steps(args, len(x), epochs))
    model.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=2, validation_data=(xv, yv))
    return deephoyer_tf.strip_zero_masks(model)


def _without_penalties(model):
    import keras

    from deephoyer_tf.paper import reproduce

    plain = keras.models.clone_model(model, clone_function=reproduce._without_regularizers)
    plain.set_weights(model.get_weights())
    return plain


def stage_regularized(args, out, method):
    import keras

    import deephoyer_tf

    x, y, xv, yv, xt, yt = data(args)
    dense = keras.models.load_model(out / "dense.keras")
    reference = load(out, "dense")["validation_accuracy"]
    reg = {"ghs": lambda: deephoyer_tf.GroupHoyerSquare(args.ghs),
           "hs": lambda: deephoyer_tf.HoyerSquare(args.hs),
           "gl": lambda: deephoyer_tf.GroupLasso(args.gl)}[method]()
    layer_types = None if method != "hs" else KERNEL_TYPES
    model = deephoyer_tf.regularize(dense, reg, layer_types=layer_types)
    keras.utils.set_random_seed(1)
    compile_(model, keras, 1e-3, steps(args, len(x), args.regularize_epochs))
    model.fit(x, y, batch_size=args.batch_size, epochs=args.regularize_epochs, verbose=2,
              validation_data=(xv, yv),
              callbacks=[deephoyer_tf.StrengthSchedule.linear_warmup(2)])
    plain = _without_penalties(model)
    ratio = choose_ratio(plain, xv, yv, reference, args.tolerance, print)
    deephoyer_tf.prune(plain, std_ratio=ratio, layer_types=KERNEL_TYPES)
    final = finetune(plain, x, y, xv, yv, args, args.finetune_epochs)
    result = {"strength": reg.strength, "std_ratio": ratio, **report_of(final)}
    if method in ("ghs", "gl"):
        small = deephoyer_tf.shrink(final)
        np.testing.assert_allclose(small.predict(xt[:64], verbose=0), final.predict(xt[:64], verbose=0),
                                   rtol=1e-3, atol=1e-3)
        result.update(shrunk_params=int(small.count_params()), **export(small, out / f"{method}.tflite", sparse=False))
        small.save(out / f"{method}.keras")
    else:
        result.update(export(final, out / f"{method}.tflite", sparse=True))
        final.save(out / f"{method}.keras")
    result.update(validation_accuracy=accuracy(final, xv, yv), test_accuracy=accuracy(final, xt, yt))
    return result


def _filter_prune(model, fraction):
    """Zeroes, in every standard Conv2D, the `fraction` of filters with the smallest L2 norm."""
    for layer in model.layers:
        if type(layer).__name__ != "Conv2D":
            continue
        kernel = layer.kernel.numpy()
        norms = np.sqrt((kernel.reshape(-1, kernel.shape[-1]) ** 2).sum(axis=0))
        k = int(np.floor(fraction * len(norms)))
        if k:
            kernel[..., np.argsort(norms)[:k]] = 0.0
            layer.kernel.assign(kernel)


def stage_smp(args, out):
    import keras

    import deephoyer_tf

    x, y, xv, yv, xt, yt = data(args)
    target = load(out, "ghs")["macs"]
    dense = keras.models.load_model(out / "dense.keras")
    saved = dense.get_weights()
    low, high = 0.0, 0.95
    for _ in range(12):  # the fraction whose MACs match Group-HS's (by MACs, not accuracy)
        mid = (low + high) / 2
        dense.set_weights(saved)
        _filter_prune(dense, mid)
        if deephoyer_tf.sparsity_report(dense).macs > target:
            low = mid
        else:
            high = mid
    dense.set_weights(saved)
    _filter_prune(dense, high)
    final = finetune(dense, x, y, xv, yv, args, args.regularize_epochs + args.finetune_epochs)
    small = deephoyer_tf.shrink(final)
    small.save(out / "smp.keras")
    return {"fraction": high, **report_of(final), "shrunk_params": int(small.count_params()),
            **export(small, out / "smp.tflite", sparse=False),
            "validation_accuracy": accuracy(final, xv, yv), "test_accuracy": accuracy(final, xt, yt)}


def stage_tfmot(args, out):
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras


    x, y, xv, yv, xt, yt = data(args)
    hs = load(out, "hs")
    target = 1.0 - hs["nonzero_weights"] / hs["total_weights"]
    dense3 = keras.models.load_model(out / "dense.keras")
    model = build(tf_keras, args)
    model.set_weights(dense3.get_weights())
    epochs = args.regularize_epochs + args.finetune_epochs
    per_epoch = steps(args, len(x), 1)
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, float(target), 0, per_epoch * args.regularize_epochs,
                                                    frequency=max(per_epoch // 4, 1))

    def wrap(layer):
        if type(layer).__name__ in KERNEL_TYPES:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruned = tf_keras.models.clone_model(model, clone_function=wrap)
    compile_(pruned, tf_keras, 1e-3, steps(args, len(x), epochs))
    pruned.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=2, validation_data=(xv, yv),
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    final = tfmot.sparsity.keras.strip_pruning(pruned)
    return {"target_sparsity": target, **report_of(final), **export(final, out / "tfmot.tflite", sparse=True),
            "validation_accuracy": accuracy(final, xv, yv), "test_accuracy": accuracy(final, xt, yt)}


def stage_latency(args, out):
    import deephoyer_tf

    names = [s for s in ("dense", "ghs", "hs", "gl", "smp", "tfmot") if (out / f"{s}.json").exists()]
    times = {name: [] for name in names}
    for _ in range(3):  # interleaved rounds: the machine's load hits every file alike
        for name in names:
            info = load(out, name)
            t = deephoyer_tf.tflite_latency(info["tflite"], runs=args.runs, warmup=30, num_threads=1,
                                            op_resolver=info["op_resolver"])
            times[name].append(t.median_s)
    return {name: float(np.median(v)) for name, v in times.items()}


LABELS = {"dense": "dense", "ghs": "Group-HS + shrink", "hs": "Hoyer-Square (sparse file)",
          "gl": "group lasso + shrink", "smp": "structured magnitude (L2 filters) + shrink",
          "tfmot": "TFMOT magnitude (sparse file)"}


def stage_table(args, out):
    lat = load(out, "latency")
    dense = load(out, "dense")
    lines = ["| method | test acc | nonzero weights | MACs | MAC ratio | params | TFLite bytes | latency (ms) | latency ratio | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("dense", "ghs", "gl", "smp", "hs", "tfmot"):
        if not (out / f"{name}.json").exists():
            continue
        r = load(out, name)
        params = r.get("shrunk_params", r["params"])
        lines.append(
            f"| {LABELS[name]} | {100 * r['test_accuracy']:.2f}% | {r['nonzero_weights']:,} | {r['macs']:,} | "
            f"{dense['macs'] / max(r['macs'], 1):.2f}x | {params:,} | {r['tflite_bytes']:,} | "
            f"{1e3 * lat[name]:.3f} | {lat['dense'] / lat[name]:.2f}x | {r['wall_seconds']:.0f} |")
    text = "\n".join(lines)
    print(text)
    return {"markdown": text}


def main(argv=None):
    args = parse(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage != "table" and (out / f"{args.stage}.json").exists():
        print(f"{args.stage}: done before ({out / (args.stage + '.json')}); skipped")
        return 0
    started = time.time()
    runner = {"dense": stage_dense, "smp": stage_smp, "tfmot": stage_tfmot,
              "latency": stage_latency, "table": stage_table}.get(args.stage)
    result = runner(args, out) if runner else stage_regularized(args, out, args.stage)
    save(out, args.stage, result, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
