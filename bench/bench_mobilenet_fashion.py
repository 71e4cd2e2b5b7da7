"""MobileNetV2 on Fashion-MNIST: dense, Group-HS + shrink, Hoyer-Square sparse, and baselines.

One stage per process (TFMOT's import switches tf.keras to Keras 2, so its
stage runs alone); each stage writes ``OUT/<stage>.json`` and is skipped when
that file exists, so an interrupted run continues where it stopped::

    for s in dense ghs hs gl smp tfmot latency table; do
        python bench/bench_mobilenet_fashion.py --stage $s --out runs/mnv2-fashion || break
    done

Protocol: MobileNetV2 (``keras.applications``, ``weights=None``, width 0.35,
32x32x1 inputs: Fashion-MNIST padded by 2 pixels). Choices (the strength, the
std ratio of the pruning threshold, the structured pruning fraction) are made
on the validation split (the last 5,000 training images) or by MACs; the test
split is read once per final model, at the end of its stage.

Strength sweeps (``--strengths 2e-3,4e-3,8e-3`` with ``--stage ghs``, ``gl``
or ``hs``): every strength is one sweep point, trained with the same budget as
a single run (regularize, choose the std ratio, prune, fine-tune, shrink) and
written to ``OUT/<stage>-<strength>.json`` (+ ``.keras``, ``.tflite``) with its
validation accuracy and MACs but no test accuracy; a rerun skips finished
points. Then one point is chosen and only its test accuracy is read, into
``OUT/<stage>-sweep.json`` (all points listed there). The choice rule
(``--choose``):

* ``accuracy`` (the default for ``ghs`` and ``hs``): the strongest strength
  whose fine-tuned model's validation accuracy is at most ``--tolerance``
  points below the dense model's validation accuracy; if none is, the weakest
  (and the JSON says so).
* ``macs`` (the default for ``gl``): the strength whose MACs are nearest to
  Group-HS's chosen MACs (``ghs-sweep.json``, else ``ghs.json``), for the
  comparison at equal MACs. MACs, not accuracy, decide.

The benchmark in BENCHMARKS.md ran (after ``dense`` and ``hs``)::

    B="python bench/bench_mobilenet_fashion.py --regularize-epochs 5 --finetune-epochs 2"
    $B --stage ghs --strengths 1e-3,2e-3,4e-3,8e-3
    $B --stage tfmot; $B --stage smp
    $B --stage gl --strengths 1e-4,5e-3,1e-2,2e-2
    $B --stage latency --rounds 41 --runs 2000; $B --stage table

Where ``<stage>-sweep.json`` exists, the later stages (``smp``, ``latency``,
``table``) use its chosen point in place of ``<stage>.json``.

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
  sparsity on the same layers (Conv2D, DepthwiseConv2D and Dense kernels),
  polynomial decay, same epoch budget. TFMOT's registry gives
  ``DepthwiseConv2D`` no prunable weights (it wraps the layer and prunes
  nothing), so the depthwise layers are rebuilt as a ``PrunableLayer`` whose
  prunable weight is the depthwise kernel; the schedule ends at the last
  pruning step of the penalty epochs, so every wrapped kernel reaches the
  target sparsity (the JSON records the sparsity reached per layer type).
* ``latency``: every TFLite file (sweep points too) timed in one process,
  single thread, ``--rounds`` interleaved rounds of ``--runs`` invocations,
  the median of the round medians.
* ``table``: the Markdown tables (methods; sweep points).
"""

import argparse
import json
import os
import pathlib
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from common import accuracy  # noqa: E402
from common import compile_  # noqa: E402
from common import export  # noqa: E402
from common import load  # noqa: E402
from common import save  # noqa: E402
from common import steps  # noqa: E402
from common import without_penalties  # noqa: E402

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
    p.add_argument("--strengths", type=_floats, default=None,
                   help="ghs/gl/hs: comma-separated strengths, one sweep point each (see the docstring)")
    p.add_argument("--choose", choices=("accuracy", "macs"), default=None,
                   help="the sweep's choice rule (default: macs for gl, accuracy otherwise)")
    p.add_argument("--runs", type=int, default=1000, help="timed TFLite invocations per round")
    p.add_argument("--rounds", type=int, default=15, help="interleaved latency rounds")
    return p.parse_args(argv)


def _floats(text):
    values = [float(v) for v in text.split(",") if v.strip()]
    if not values or any(v <= 0 for v in values):
        raise argparse.ArgumentTypeError(f"expected positive comma-separated strengths, received {text!r}")
    return sorted(set(values))


def point_name(method, strength):
    return f"{method}-{strength:g}"


def resolve(out, method):
    """The result of `method`: its sweep's chosen point when it has a sweep."""
    sweep = out / f"{method}-sweep.json"
    return load(out, f"{method}-sweep") if sweep.exists() else load(out, method)


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


def report_of(model):
    import deephoyer_tf

    r = deephoyer_tf.sparsity_report(model)
    return {"nonzero_weights": r.nonzero_weights, "total_weights": r.total_weights,
            "macs": r.macs, "dense_macs": r.dense_macs, "params": int(model.count_params())}


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


def _regularizer(method, strength):
    import deephoyer_tf

    return {"ghs": deephoyer_tf.GroupHoyerSquare, "hs": deephoyer_tf.HoyerSquare,
            "gl": deephoyer_tf.GroupLasso}[method](strength)


def train_point(args, out, method, strength, splits, name):
    """Regularize, choose the std ratio, prune, fine-tune; save `name`.keras/.tflite.

    Returns the result (validation accuracy, no test accuracy) and the saved
    model (shrunk for ``ghs``/``gl``).
    """
    import keras

    import deephoyer_tf

    x, y, xv, yv, xt, _ = splits
    dense = keras.models.load_model(out / "dense.keras")
    reference = load(out, "dense")["validation_accuracy"]
    reg = _regularizer(method, strength)
    layer_types = None if method != "hs" else KERNEL_TYPES
    model = deephoyer_tf.regularize(dense, reg, layer_types=layer_types)
    keras.utils.set_random_seed(1)
    compile_(model, keras, 1e-3, steps(args, len(x), args.regularize_epochs))
    model.fit(x, y, batch_size=args.batch_size, epochs=args.regularize_epochs, verbose=2,
              validation_data=(xv, yv),
              callbacks=[deephoyer_tf.StrengthSchedule.linear_warmup(2)])
    plain = without_penalties(model)
    ratio = choose_ratio(plain, xv, yv, reference, args.tolerance, print)
    deephoyer_tf.prune(plain, std_ratio=ratio, layer_types=KERNEL_TYPES)
    final = finetune(plain, x, y, xv, yv, args, args.finetune_epochs)
    result = {"strength": float(strength), "std_ratio": ratio, **report_of(final),
              "validation_accuracy": accuracy(final, xv, yv)}
    if method in ("ghs", "gl"):
        small = deephoyer_tf.shrink(final)
        np.testing.assert_allclose(small.predict(xt[:64], verbose=0), final.predict(xt[:64], verbose=0),
                                   rtol=1e-3, atol=1e-3)
        result.update(shrunk_params=int(small.count_params()), **export(small, out / f"{name}.tflite", sparse=False))
        final = small
    else:
        result.update(export(final, out / f"{name}.tflite", sparse=True))
    final.save(out / f"{name}.keras")
    return result, final


def stage_regularized(args, out, method):
    splits = data(args)
    result, final = train_point(args, out, method, getattr(args, method), splits, method)
    result["test_accuracy"] = accuracy(final, splits[4], splits[5])
    return result


def choose_point(points, rule, reference, tolerance, target_macs):
    """The chosen sweep point (see the module docstring) and why."""
    if rule == "macs":
        chosen = min(points, key=lambda r: (abs(r["macs"] - target_macs), -r["strength"]))
        return chosen, f"MACs nearest Group-HS's {target_macs:,}"
    within = [r for r in points if r["validation_accuracy"] >= reference - tolerance / 100]
    if within:
        return (max(within, key=lambda r: r["strength"]),
                f"strongest with validation accuracy >= dense {reference:.4f} - {tolerance} points")
    return (min(points, key=lambda r: r["strength"]),
            f"none within {tolerance} points of dense validation {reference:.4f}: the weakest")


def stage_sweep(args, out, method):
    import keras

    splits = data(args)
    points = []
    for strength in args.strengths:
        name = point_name(method, strength)
        if (out / f"{name}.json").exists():
            print(f"{name}: done before; reused", flush=True)
        else:
            started = time.time()
            keras.backend.clear_session()
            result, _ = train_point(args, out, method, strength, splits, name)
            save(out, name, result, started)
        points.append(load(out, name) | {"name": name})
    rule = args.choose or ("macs" if method == "gl" else "accuracy")
    target = resolve(out, "ghs")["macs"] if rule == "macs" else None
    reference = load(out, "dense")["validation_accuracy"]
    chosen, why = choose_point(points, rule, reference, args.tolerance, target)
    print(f"[sweep] chosen {chosen['name']}: {why}", flush=True)
    final = keras.models.load_model(out / f"{chosen['name']}.keras")
    test = accuracy(final, splits[4], splits[5])  # the one test read of this sweep
    keys = ("name", "strength", "std_ratio", "validation_accuracy", "macs", "nonzero_weights",
            "shrunk_params", "tflite_bytes", "wall_seconds")
    return {**{k: v for k, v in chosen.items() if k not in ("stage", "command", "date", "machine")},
            "chosen": chosen["name"], "rule": rule, "why": why, "test_accuracy": test,
            "wall_seconds": round(sum(r["wall_seconds"] for r in points), 1),
            "points": [{k: r[k] for k in keys if k in r} for r in points]}


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
    target = resolve(out, "ghs")["macs"]
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
    return {"fraction": high, "target_macs": target, **report_of(final), "shrunk_params": int(small.count_params()),
            **export(small, out / "smp.tflite", sparse=False),
            "validation_accuracy": accuracy(final, xv, yv), "test_accuracy": accuracy(final, xt, yt)}


def _prunable_depthwise(tf_keras, tfmot):
    """tf_keras ``DepthwiseConv2D`` whose depthwise kernel TFMOT prunes.

    TFMOT's registry maps ``DepthwiseConv2D`` to no prunable weights, so
    ``prune_low_magnitude`` wraps it and leaves its kernel dense;
    ``PrunableLayer`` is TFMOT's documented way to name what to prune.
    """

    class PrunableDepthwiseConv2D(tf_keras.layers.DepthwiseConv2D, tfmot.sparsity.keras.PrunableLayer):
        def get_prunable_weights(self):
            return [self.depthwise_kernel]

    return PrunableDepthwiseConv2D


def _sparsity_by_type(model):
    zeros, sizes = {}, {}
    for layer in model.layers:
        kind = type(layer).__name__
        if kind not in KERNEL_TYPES:
            continue
        kernel = np.asarray(layer.get_weights()[0])
        zeros[kind] = zeros.get(kind, 0) + int(np.sum(kernel == 0))
        sizes[kind] = sizes.get(kind, 0) + kernel.size
    return {kind: round(zeros[kind] / sizes[kind], 4) for kind in sizes}


def stage_tfmot(args, out):
    import keras
    import tensorflow_model_optimization as tfmot
    import tf_keras

    x, y, xv, yv, xt, yt = data(args)
    hs = resolve(out, "hs")
    target = 1.0 - hs["nonzero_weights"] / hs["total_weights"]
    dense3 = keras.models.load_model(out / "dense.keras")
    model = build(tf_keras, args)
    model.set_weights(dense3.get_weights())
    epochs = args.regularize_epochs + args.finetune_epochs
    per_epoch = steps(args, len(x), 1)
    frequency = max(per_epoch // 4, 1)
    # The last mask update TFMOT makes is at the last multiple of `frequency`
    # up to end_step; ending the schedule there puts it at the target sparsity.
    end_step = (per_epoch * args.regularize_epochs // frequency) * frequency
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, float(target), 0, end_step, frequency=frequency)
    depthwise = _prunable_depthwise(tf_keras, tfmot)

    def wrap(layer):
        kind = type(layer).__name__
        if kind == "DepthwiseConv2D":
            layer = depthwise.from_config(layer.get_config())
        if kind in KERNEL_TYPES:
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruned = tf_keras.models.clone_model(model, clone_function=wrap)
    for layer in pruned.layers:  # the rebuilt depthwise layers start from the dense weights too
        inner = getattr(layer, "layer", layer)
        inner.set_weights(model.get_layer(inner.name).get_weights())
    compile_(pruned, tf_keras, 1e-3, steps(args, len(x), epochs))
    pruned.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=2, validation_data=(xv, yv),
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    final = build(tf_keras, args)  # plain layer classes again, for export and the report
    final.set_weights(stripped.get_weights())
    return {"target_sparsity": target, "end_step": end_step, "frequency": frequency,
            "steps_run": per_epoch * epochs, "sparsity_by_type": _sparsity_by_type(final),
            **report_of(final), **export(final, out / "tfmot.tflite", sparse=True),
            "validation_accuracy": accuracy(final, xv, yv), "test_accuracy": accuracy(final, xt, yt)}


METHODS = ("dense", "ghs", "gl", "smp", "hs", "tfmot")


def stage_latency(args, out):
    import deephoyer_tf

    names = [m for m in METHODS if (out / f"{m}.json").exists() or (out / f"{m}-sweep.json").exists()]
    infos = {m: resolve(out, m) for m in names}
    for m in ("ghs", "gl", "hs"):  # every sweep point too, for the sweep tables
        if (out / f"{m}-sweep.json").exists():
            for point in infos[m]["points"]:
                infos[point["name"]] = load(out, point["name"])
    files = {info["tflite"]: info["op_resolver"] for info in infos.values()}  # a chosen point is timed once
    by_file = {path: [] for path in files}
    for _ in range(args.rounds):  # interleaved rounds: the machine's load hits every file alike
        for path, resolver in files.items():
            t = deephoyer_tf.tflite_latency(path, runs=args.runs, warmup=100, num_threads=1,
                                            op_resolver=resolver)
            by_file[path].append(t.median_s)
    times = {name: by_file[info["tflite"]] for name, info in infos.items()}
    result = {name: float(np.median(v)) for name, v in times.items()}
    result["dense_over"] = {name: float(np.median(np.array(times["dense"]) / np.array(v)))
                            for name, v in times.items()}
    result["rounds"], result["runs"] = args.rounds, args.runs
    return result


LABELS = {"dense": "dense", "ghs": "Group-HS + shrink", "hs": "Hoyer-Square (sparse file)",
          "gl": "group lasso + shrink", "smp": "structured magnitude (L2 filters) + shrink",
          "tfmot": "TFMOT magnitude (sparse file)"}


def stage_table(args, out):
    lat = load(out, "latency")
    dense = load(out, "dense")
    lines = ["| method | test acc | nonzero weights | MACs | MAC ratio | params | TFLite bytes | latency (ms) | latency ratio | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name in METHODS:
        if not ((out / f"{name}.json").exists() or (out / f"{name}-sweep.json").exists()):
            continue
        r = resolve(out, name)
        params = r.get("shrunk_params", r["params"])
        label = LABELS[name] + (f" ({r['strength']:.0e})" if "chosen" in r else "")
        lines.append(
            f"| {label} | {100 * r['test_accuracy']:.2f}% | {r['nonzero_weights']:,} | {r['macs']:,} | "
            f"{dense['macs'] / max(r['macs'], 1):.2f}x | {params:,} | {r['tflite_bytes']:,} | "
            f"{1e3 * lat[name]:.3f} | {lat['dense'] / lat[name]:.2f}x | {r['wall_seconds']:.0f} |")
    sweeps = ["| method | strength | std ratio | validation acc | MACs | MAC ratio | params | latency ratio | chosen | wall (s) |",
              "|---|---|---|---|---|---|---|---|---|---|"]
    for name in ("ghs", "gl", "hs"):
        if not (out / f"{name}-sweep.json").exists():
            continue
        sweep = load(out, f"{name}-sweep")
        for point in sweep["points"]:
            ratio = f"{lat['dense'] / lat[point['name']]:.2f}x" if point["name"] in lat else "-"
            sweeps.append(
                f"| {LABELS[name]} | {point['strength']:.0e} | {point['std_ratio']} | "
                f"{100 * point['validation_accuracy']:.2f}% | {point['macs']:,} | "
                f"{dense['macs'] / max(point['macs'], 1):.2f}x | {point.get('shrunk_params', '-'):,} | {ratio} | "
                f"{'yes' if point['name'] == sweep['chosen'] else ''} | {point['wall_seconds']:.0f} |")
    text = "\n".join(lines)
    if len(sweeps) > 2:
        text += "\n\n" + "\n".join(sweeps)
    print(text)
    return {"markdown": text}


def main(argv=None):
    args = parse(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.strengths and args.stage not in ("ghs", "gl", "hs"):
        raise SystemExit(f"--strengths is for the ghs, gl and hs stages, not {args.stage!r}")
    name = f"{args.stage}-sweep" if args.strengths else args.stage
    if args.stage != "table" and (out / f"{name}.json").exists():
        print(f"{name}: done before ({out / (name + '.json')}); skipped")
        return 0
    started = time.time()
    runner = {"dense": stage_dense, "smp": stage_smp, "tfmot": stage_tfmot,
              "latency": stage_latency, "table": stage_table}.get(args.stage)
    if runner:
        result = runner(args, out)
    elif args.strengths:
        result = stage_sweep(args, out, args.stage)
    else:
        result = stage_regularized(args, out, args.stage)
    if args.strengths:  # the sweep's wall time is its points' (a resumed sweep reuses finished ones)
        wall = result.pop("wall_seconds")
        save(out, name, result, started)
        result["wall_seconds"] = wall
        (out / f"{name}.json").write_text(json.dumps(result, indent=2))
    else:
        save(out, name, result, started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
