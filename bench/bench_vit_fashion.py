"""A small Vision Transformer on Fashion-MNIST: dense, Hoyer-Square, Group-HS + shrink, TFMOT.

One stage per process (TFMOT's import switches tf.keras to Keras 2, so its
stage runs alone); each stage writes ``OUT/<stage>.json`` and is skipped when
that file exists, so an interrupted run continues where it stopped::

    for s in dense hs ghs tfmot latency table; do
        python bench/bench_vit_fashion.py --stage $s --out runs/vit-fashion || break
    done

Model: 28x28 images cut into 16 patches of 7x7 (a stride-7 Conv2D), a learned
position embedding, ``--blocks`` pre-norm transformer blocks (a
`MultiHeadAttention` of ``--heads`` heads over ``--dim`` units, a feed-forward
block of ``--mlp`` GELU units), global average pooling, a Dense classifier.

Protocol: choices are made on the validation split (the last 5,000 training
images): the std ratio of the pruning threshold (the largest of a fixed list
whose pruned model, before fine-tuning, stays within ``--tolerance`` points of
the dense validation accuracy) and, with ``--strengths``, the strength (the
point with the fewest nonzero weights, or MACs for Group-HS, whose fine-tuned
validation accuracy stays within ``--tolerance`` points of dense). The test
split is read once per final model, at the end of its stage.

Stages:
* ``dense``: Adam, cosine-decayed learning rate.
* ``hs``: Hoyer-Square on every kernel (attention projections included),
  prune, fine-tune with zeros fixed, sparse TFLite file.
* ``ghs``: Group-HS: a group per head (`HeadGroups`), per feed-forward hidden
  unit (`UnitGroups`), per unit of the other layers; prune, fine-tune,
  ``shrink`` (heads and hidden units removed), dense TFLite file.
* ``tfmot``: TFMOT ``prune_low_magnitude`` (tf_keras) on the Conv2D and Dense
  layers and on the attention kernels (a `MultiHeadAttention` subclass that is
  a TFMOT ``PrunableLayer``), to Hoyer-Square's sparsity, same epoch budget.
* ``latency``: every TFLite file timed in one process, single thread,
  interleaved rounds, medians.
* ``table``: the Markdown table.
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

STAGES = ("dense", "hs", "ghs", "tfmot", "latency", "table")
RATIOS = (1.0, 0.75, 0.5, 0.3, 0.2, 0.1, 0.05, 0.02)


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--stage", choices=STAGES, required=True)
    p.add_argument("--out", default="runs/vit-fashion")
    p.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "fashion-mnist"))
    p.add_argument("--dim", type=int, default=64)
    p.add_argument("--heads", type=int, default=8)
    p.add_argument("--mlp", type=int, default=256)
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--dense-epochs", type=int, default=15)
    p.add_argument("--regularize-epochs", type=int, default=6)
    p.add_argument("--finetune-epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--train-subset", type=int, default=None, help="first N training images (quick)")
    p.add_argument("--hs", type=float, default=1e-4)
    p.add_argument("--ghs", type=float, default=1e-3)
    p.add_argument("--strengths", type=_floats, default=None,
                   help="hs/ghs: comma-separated strengths, one point each, chosen on validation")
    p.add_argument("--head-factor", type=float, default=1.0,
                   help="ghs: the attention layers' strength is this times the others'")
    p.add_argument("--tolerance", type=float, default=1.0, help="validation points a choice may cost")
    p.add_argument("--runs", type=int, default=500, help="timed TFLite invocations per round")
    p.add_argument("--rounds", type=int, default=9, help="interleaved latency rounds")
    return p.parse_args(argv)


def _floats(text):
    values = sorted({float(v) for v in text.split(",") if v.strip()})
    if not values or values[0] <= 0:
        raise argparse.ArgumentTypeError(f"expected positive comma-separated strengths, received {text!r}")
    return values


# --- model ----------------------------------------------------------------------------


def position_embedding_class(module):
    """A learned (tokens, dim) table added to the patch embeddings, for `module` (keras or tf_keras)."""
    import deephoyer_tf
    from deephoyer_tf.structure import cutters

    register = (module.saving.register_keras_serializable if hasattr(module, "saving")
                and hasattr(module.saving, "register_keras_serializable")
                else module.utils.register_keras_serializable)

    @register(package="bench_vit")
    class PositionEmbedding(module.layers.Layer):
        def build(self, input_shape):
            self.table = self.add_weight(name="table", shape=tuple(input_shape[1:]),
                                         initializer=module.initializers.RandomNormal(stddev=0.02))
            super().build(input_shape)

        def call(self, x):
            return x + self.table

    # shrink keeps it whole: it adds a per-unit constant on the residual stream.
    deephoyer_tf.register_layer(PositionEmbedding, kind="opaque", cutter=cutters.copy_layer)
    return PositionEmbedding


def prunable_attention_class(tf_keras, tfmot):
    """tf_keras' MultiHeadAttention as a TFMOT PrunableLayer: its four projection kernels."""

    class PrunableAttention(tf_keras.layers.MultiHeadAttention, tfmot.sparsity.keras.PrunableLayer):
        def get_prunable_weights(self):
            return [self._query_dense.kernel, self._key_dense.kernel, self._value_dense.kernel,
                    self._output_dense.kernel]

    return PrunableAttention


def build(module, args, attention=None, position=None):
    layers = module.layers
    attention = attention or layers.MultiHeadAttention
    position = position or position_embedding_class(module)
    inp = module.Input((28, 28, 1), name="image")
    x = layers.Conv2D(args.dim, 7, strides=7, name="patches")(inp)
    x = layers.Reshape((16, args.dim), name="tokens")(x)
    x = position(name="positions")(x)
    for b in range(args.blocks):
        h = layers.LayerNormalization(epsilon=1e-6, name=f"ln{b}a")(x)
        h = attention(args.heads, args.dim // args.heads, name=f"attention{b}")(h, h)
        x = layers.Add(name=f"residual{b}a")([x, h])
        h = layers.LayerNormalization(epsilon=1e-6, name=f"ln{b}b")(x)
        h = layers.Dense(args.mlp, activation="gelu", name=f"mlp{b}_in")(h)
        h = layers.Dense(args.dim, name=f"mlp{b}_out")(h)
        x = layers.Add(name=f"residual{b}b")([x, h])
    x = layers.LayerNormalization(epsilon=1e-6, name="ln_final")(x)
    x = layers.GlobalAveragePooling1D(name="pool")(x)
    out = layers.Dense(10, name="classifier")(x)
    return module.Model(inp, out, name="vit")


# --- shared steps ---------------------------------------------------------------------


def data(args):
    from deephoyer_tf.paper.datasets import load_fashion_mnist

    d = load_fashion_mnist(args.data_dir)
    x, y = d.x_train, d.y_train
    if args.train_subset:
        x, y = x[: args.train_subset], y[: args.train_subset]
    return x, y, d.x_val, d.y_val, d.x_test, d.y_test


def report_of(model):
    import deephoyer_tf

    r = deephoyer_tf.sparsity_report(model, strict=True)
    attention = {row.name: [row.live_heads, row.heads] for row in r.attention_layers}
    mlp = {row.name: [row.live_outputs, row.outputs] for row in r.layers if row.name.endswith("_in")}
    return {"nonzero_weights": r.nonzero_weights, "total_weights": r.total_weights,
            "macs": r.macs, "dense_macs": r.dense_macs, "live_heads": r.live_heads,
            "heads": r.heads, "heads_by_layer": attention, "mlp_units": mlp,
            "params": int(model.count_params())}


def load_dense(out):
    import keras

    position_embedding_class(keras)
    return keras.models.load_model(out / "dense.keras")


# --- stages -----------------------------------------------------------------------------


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


def choose_ratio(model, xv, yv, reference, tolerance):
    """Largest std ratio whose pruned validation accuracy stays within `tolerance` points."""
    import deephoyer_tf

    saved = model.get_weights()
    for ratio in RATIOS:
        deephoyer_tf.prune(model, std_ratio=ratio)
        acc = accuracy(model, xv, yv)
        model.set_weights(saved)
        print(f"[select] std_ratio {ratio}: validation {acc:.4f} (dense {reference:.4f})", flush=True)
        if acc >= reference - tolerance / 100:
            return ratio
    print("[select] no ratio within tolerance: the smallest (reported)", flush=True)
    return RATIOS[-1]


def train_point(args, out, method, strength, splits, name):
    """Regularize, choose the std ratio, prune, fine-tune (and shrink for ghs); save `name`.*"""
    import keras

    import deephoyer_tf

    x, y, xv, yv, xt, _ = splits
    dense = load_dense(out)
    reference = load(out, "dense")["validation_accuracy"]
    reg = (deephoyer_tf.GroupHoyerSquare if method == "ghs" else deephoyer_tf.HoyerSquare)(strength)
    if method == "ghs" and args.head_factor != 1.0:
        heads = deephoyer_tf.GroupHoyerSquare(strength * args.head_factor)
        reg = {layer.name: heads if type(layer).__name__ == "MultiHeadAttention" else reg
               for layer in dense.layers}
    model = deephoyer_tf.regularize(dense, reg, strict=True)
    keras.utils.set_random_seed(1)
    compile_(model, keras, 1e-3, steps(args, len(x), args.regularize_epochs))
    model.fit(x, y, batch_size=args.batch_size, epochs=args.regularize_epochs, verbose=2,
              validation_data=(xv, yv), callbacks=[deephoyer_tf.StrengthSchedule.linear_warmup(2)])
    plain = without_penalties(model)
    ratio = choose_ratio(plain, xv, yv, reference, args.tolerance)
    deephoyer_tf.prune(plain, std_ratio=ratio)
    deephoyer_tf.fix_zeros(plain)
    compile_(plain, keras, 3e-4, steps(args, len(x), args.finetune_epochs))
    plain.fit(x, y, batch_size=args.batch_size, epochs=args.finetune_epochs, verbose=2,
              validation_data=(xv, yv))
    final = deephoyer_tf.strip_zero_masks(plain)
    result = {"strength": float(strength), "head_factor": args.head_factor if method == "ghs" else None,
              "std_ratio": ratio, **report_of(final),
              "validation_accuracy": accuracy(final, xv, yv)}
    if method == "ghs":
        small = deephoyer_tf.shrink(final)
        a, b = small.predict(xt[:256], verbose=0), final.predict(xt[:256], verbose=0)
        result["shrink_max_abs_error"] = float(np.abs(a - b).max())
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-3)
        result.update(shrunk_params=int(small.count_params()),
                      shrunk_heads={layer.name: layer.get_config()["num_heads"] for layer in small.layers
                                    if type(layer).__name__ == "MultiHeadAttention"},
                      **export(small, out / f"{name}.tflite", sparse=False))
        final = small
    else:
        result.update(export(final, out / f"{name}.tflite", sparse=True))
    final.save(out / f"{name}.keras")
    return result, final


def point_name(args, method, strength):
    name = f"{method}-{strength:g}"
    if method == "ghs" and args.head_factor != 1.0:
        name += f"-h{args.head_factor:g}"
    return name


def stage_regularized(args, out, method):
    """Trains the requested points (skipping those done), then chooses among every point.

    Choice, on validation: among the points within ``--tolerance`` points of
    the dense validation accuracy, the one with the fewest nonzero weights
    (``hs``) or MACs (``ghs``); if none is within, the most accurate.
    """
    started = time.time()
    splits = data(args)
    for s in args.strengths or [getattr(args, method)]:
        name = point_name(args, method, s)
        if (out / f"{name}.json").exists():
            continue
        t0 = time.time()
        result, _ = train_point(args, out, method, s, splits, name)
        result["name"] = name
        save(out, name, result, t0)
    points = [json.loads(p.read_text()) for p in sorted(out.glob(f"{method}-*.json"))]
    reference = load(out, "dense")["validation_accuracy"]
    within = [p for p in points if p["validation_accuracy"] >= reference - args.tolerance / 100]
    size = "macs" if method == "ghs" else "nonzero_weights"
    chosen = (min(within, key=lambda p: p[size]) if within
              else max(points, key=lambda p: p["validation_accuracy"]))
    import keras

    position_embedding_class(keras)
    final = keras.models.load_model(out / f"{chosen['name']}.keras")
    xt, yt = splits[4], splits[5]
    result = dict(chosen)
    result.update(point_command=chosen["command"], point_wall_seconds=chosen["wall_seconds"],
                  chosen_from=[p["name"] for p in points], within_tolerance=bool(within),
                  choice_rule=f"fewest {size} within {args.tolerance} validation points of dense",
                  test_accuracy=accuracy(final, xt, yt))
    save(out, method, result, started)
    return None


def stage_tfmot(args, out):
    import tensorflow_model_optimization as tfmot
    import tf_keras

    x, y, xv, yv, xt, yt = data(args)
    hs = load(out, "hs")
    target = 1.0 - hs["nonzero_weights"] / hs["total_weights"]
    dense3 = load_dense(out)
    prunable = prunable_attention_class(tf_keras, tfmot)
    model = build(tf_keras, args, attention=prunable, position=position_embedding_class(tf_keras))
    model.set_weights(dense3.get_weights())
    np.testing.assert_allclose(model.predict(xv[:64], verbose=0), dense3.predict(xv[:64], verbose=0),
                               rtol=1e-4, atol=1e-4)
    epochs = args.regularize_epochs + args.finetune_epochs
    per_epoch = steps(args, len(x), 1)
    frequency = max(per_epoch // 4, 1)
    end_step = (per_epoch * args.regularize_epochs // frequency) * frequency
    schedule = tfmot.sparsity.keras.PolynomialDecay(0.0, float(target), 0, end_step, frequency=frequency)

    def wrap(layer):
        if isinstance(layer, (tf_keras.layers.Conv2D, tf_keras.layers.Dense, prunable)):
            return tfmot.sparsity.keras.prune_low_magnitude(layer, pruning_schedule=schedule)
        return layer

    pruned = tf_keras.models.clone_model(model, clone_function=wrap)
    for layer in pruned.layers:  # the wrapped layers start from the dense weights too
        inner = getattr(layer, "layer", layer)
        inner.set_weights(model.get_layer(inner.name).get_weights())
    compile_(pruned, tf_keras, 1e-3, steps(args, len(x), epochs))
    pruned.fit(x, y, batch_size=args.batch_size, epochs=epochs, verbose=2, validation_data=(xv, yv),
               callbacks=[tfmot.sparsity.keras.UpdatePruningStep()])
    stripped = tfmot.sparsity.keras.strip_pruning(pruned)
    final = build(tf_keras, args, position=position_embedding_class(tf_keras))
    final.set_weights(stripped.get_weights())
    return {"target_sparsity": target, "end_step": end_step, "frequency": frequency,
            **report_of(final), **export(final, out / "tfmot.tflite", sparse=True),
            "validation_accuracy": accuracy(final, xv, yv), "test_accuracy": accuracy(final, xt, yt)}


METHODS = ("dense", "ghs", "hs", "tfmot")
LABELS = {"dense": "dense", "ghs": "Group-HS + shrink (heads, units removed)",
          "hs": "Hoyer-Square (sparse file)", "tfmot": "TFMOT magnitude (sparse file)"}


def stage_latency(args, out):
    import deephoyer_tf

    infos = {m: load(out, m) for m in METHODS if (out / f"{m}.json").exists()}
    times = {name: [] for name in infos}
    for _ in range(args.rounds):  # interleaved rounds: the machine's load hits every file alike
        for name, info in infos.items():
            t = deephoyer_tf.tflite_latency(info["tflite"], runs=args.runs, warmup=50, num_threads=1,
                                            op_resolver=info["op_resolver"])
            times[name].append(t.median_s)
    result = {name: float(np.median(v)) for name, v in times.items()}
    result["dense_over"] = {name: float(np.median(np.array(times["dense"]) / np.array(v)))
                            for name, v in times.items()}
    result["rounds"], result["runs"] = args.rounds, args.runs
    return result


def stage_table(args, out):
    lat = load(out, "latency")
    dense = load(out, "dense")
    lines = ["| method | test acc | nonzero weights | live heads | MLP units | MACs | MAC ratio | params | "
             "TFLite bytes | latency (ms) | latency ratio | wall (s) |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in METHODS:
        if not (out / f"{name}.json").exists():
            continue
        r = load(out, name)
        units = sum(v[0] for v in r["mlp_units"].values()), sum(v[1] for v in r["mlp_units"].values())
        lines.append(
            f"| {LABELS[name]} | {100 * r['test_accuracy']:.2f}% | {r['nonzero_weights']:,} | "
            f"{r['live_heads']} / {r['heads']} | {units[0]} / {units[1]} | {r['macs']:,} | "
            f"{dense['macs'] / r['macs']:.2f}x | {r.get('shrunk_params', r['params']):,} | "
            f"{r['tflite_bytes']:,} | {1000 * lat[name]:.3f} | {lat['dense_over'][name]:.2f}x | "
            f"{r.get('point_wall_seconds', r['wall_seconds']):.0f} |")
    text = "\n".join(lines)
    print(text)
    return {"markdown": text}


def main(argv=None):
    args = parse(argv)
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if args.stage in ("hs", "ghs"):
        if (out / f"{args.stage}.json").exists():
            print(f"{args.stage}: done ({out / args.stage}.json)")
            return
        stage_regularized(args, out, args.stage)
        return
    if (out / f"{args.stage}.json").exists() and args.stage not in ("latency", "table"):
        print(f"{args.stage}: done ({out / args.stage}.json)")
        return
    started = time.time()
    result = globals()[f"stage_{args.stage}"](args, out)
    save(out, args.stage, result, started)


if __name__ == "__main__":
    main()
