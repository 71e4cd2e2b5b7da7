"""Validation fronts of Hoyer-Square, L1 and magnitude pruning (or Group-HS and group lasso) on LeNet-300-100.

Every run is `deephoyer-tf reproduce lenet-300-100` with the default recipe
(same dense model per seed, same 30 regularized or pruning epochs, same
15-epoch fine-tune), into ``OUT/<method>-s<seed>/`` (resumable: a finished run,
one with ``results.json``, is skipped; an interrupted one resumes):

- ``hs`` and ``l1``: the front is the selection stage's candidates (each std
  ratio's nonzero weights and its validation accuracy after the 3-epoch
  selection fine-tune, mean of the last 2 epochs), plus the final model
  (after the full fine-tune);
- ``magnitude``: one run per target sparsity (`MagnitudePruning`,
  `PolynomialDecay` over the 30 pruning epochs, then the 15-epoch fine-tune);
  each final model is a point. Magnitude's points have 15 fine-tune epochs
  where the penalties' selection points have 3: the comparison favours
  magnitude pruning.

The selection stops at the first ratio that passes, so its candidates are a
part of the front. ``--full-front`` measures the whole grid (`FULL_GRID`) on
each finished ``hs``/``l1`` run, with the selection's own procedure (prune the
regularized kernels saved in ``stages.npz``, fine-tune 3 epochs with the
zeros held, mean of the last 2 validation epochs; no candidate screened out)
into ``front.json``. The
biases are the final model's (``stages.npz`` keeps kernels only): the same
for both methods, and re-trained by each fine-tune.

Only validation accuracies are compared; the test split is read once by each
run for its final model and not used here.

    python bench/bench_fronts.py --out runs/fronts --data-dir ../shared/data/mnist --seeds 0 1 2
    python bench/bench_fronts.py --out runs/fronts --table     # the Markdown table of what has finished

The structural comparison, Group-HS against group lasso, measures MACs (the
dense LeNet-300-100 has 266,200) rather than nonzero weights:

    python bench/bench_fronts.py --out runs/group-fronts --data-dir ../shared/data/mnist \
        --methods group-hs group-lasso --metric macs
    python bench/bench_fronts.py --out runs/group-fronts --methods group-hs group-lasso --metric macs --full-front

In the table the first method of ``--methods`` is the one compared with the
others ("strictly fewest").
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time

METHODS = ("hs", "l1", "magnitude", "group-hs", "group-lasso")
# --metric: (the key in results.json and in each candidate, its name in the table)
METRICS = {"weights": ("nonzero_weights", "nonzero weights"), "macs": ("macs", "MACs")}
FULL_GRID = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)
TARGETS = (0.95, 0.97, 0.98, 0.99)


def run_name(method, seed, target=None):
    return f"{method}-s{seed}" if target is None else f"{method}-{target:g}-s{seed}"


def runs_of(seeds, methods, targets):
    for seed in seeds:
        for method in methods:
            for target in (targets if method == "magnitude" else (None,)):
                yield method, seed, target


def run_one(out, data_dir, method, seed, target, log):
    folder = out / run_name(method, seed, target)
    if (folder / "results.json").exists():
        return
    command = [sys.executable, "-m", "deephoyer_tf.cli", "reproduce", "lenet-300-100", "--method", method,
               "--seed", str(seed), "--output", str(folder)]
    if data_dir:
        command += ["--data-dir", str(data_dir)]
    if target is not None:
        command += ["--target-sparsity", str(target)]
    log(f"{time.strftime('%H:%M:%S')} {' '.join(command[2:])}")
    start = time.time()
    with open(out / (run_name(method, seed, target) + ".log"), "a") as stream:
        subprocess.run(command, check=True, stdout=stream, stderr=subprocess.STDOUT)
    log(f"{time.strftime('%H:%M:%S')} done in {time.time() - start:.0f} s")


def points(out, method, seed, targets, metric="weights"):
    """[(size, validation accuracy, label)] of one method and seed, and the dense validation accuracy.

    The size is the nonzero weights (`metric` "weights") or the MACs ("macs").
    """
    key = METRICS[metric][0]
    found, dense = [], None
    for target in (targets if method == "magnitude" else (None,)):
        path = out / run_name(method, seed, target) / "results.json"
        if not path.exists():
            continue
        result = json.loads(path.read_text())
        dense = result["dense_validation_accuracy"]
        found.append((result[key], result["validation_accuracy"],
                      "final" if target is None else f"target {target:g}"))
        front = path.parent / "front.json"
        candidates = json.loads(front.read_text()) if front.exists() else result.get("selection") or []
        for candidate in candidates:
            if candidate.get("selection_accuracy") is not None:
                if key not in candidate:
                    raise SystemExit(f"{front if front.exists() else path} has no {key!r} per candidate "
                                     "(measured before the selection recorded it): run --full-front again")
                found.append((candidate[key], candidate["selection_accuracy"],
                              f"ratio {candidate['std_ratio']:g}"))
    return found, dense


def full_front(out, method, seed, data_dir, log):
    """Every ratio of `FULL_GRID` on one finished run's regularized kernels -> ``front.json``."""
    import dataclasses

    import numpy as np

    from deephoyer_tf._internal import atomic
    from deephoyer_tf._internal import loading
    from deephoyer_tf.paper import datasets
    from deephoyer_tf.paper import reproduce

    folder = out / run_name(method, seed)
    if (folder / "front.json").exists() or not (folder / "results.json").exists():
        return
    recipe = reproduce.recipe_for("lenet-300-100", method, seed=seed)
    # No candidate passes a negative tolerance, and none is screened out: every ratio is fine-tuned.
    recipe = dataclasses.replace(recipe, std_ratios=FULL_GRID, tolerance=-1.0, select_reference="dense",
                                 select_screen_drop=None)
    data = datasets.load_dataset("mnist", data_dir)
    model = reproduce.build_model("lenet-300-100")
    final = loading.load_model(folder / "model.keras", compile=False, safe_mode=True)
    biases = {layer.name: layer.bias.numpy() for layer in final.layers if getattr(layer, "bias", None) is not None}
    stages = np.load(folder / "stages.npz")
    for layer in model.layers:
        if f"regularized/{layer.name}" in stages.files:
            layer.kernel.assign(stages[f"regularized/{layer.name}"])
            layer.bias.assign(biases[layer.name])
    _, tries = reproduce.select_std_ratio(model, data, recipe, reference=1.0, log=log)
    atomic.atomic_write_text(folder / "front.json", json.dumps(tries, indent=1))


def smallest_at(found, level):
    """The smallest size of a point with validation accuracy >= `level` (None if none)."""
    sizes = [size for size, accuracy, _ in found if accuracy >= level - 1e-9]
    return min(sizes) if sizes else None


def table(out, seeds, methods, targets, drops=(0.5, 0.4, 0.3, 0.2, 0.1, 0.0), metric="weights"):
    what = METRICS[metric][1]
    contender = methods[0]
    lines = ["| seed | dense val | " + " | ".join(f"fewest {what} at >= dense - {d:.1f}" for d in drops) + " |",
             "|---|---|" + "---|" * len(drops)]
    wins = {d: [] for d in drops}
    for seed in seeds:
        fronts = {method: points(out, method, seed, targets, metric) for method in methods}
        denses = [dense for _, dense in fronts.values() if dense is not None]
        if len(denses) < len(methods):
            continue
        dense = denses[0]
        cells = []
        for drop in drops:
            level = dense - drop / 100
            sizes = {method: smallest_at(fronts[method][0], level) for method in methods}
            cells.append(" / ".join(f"{m} {'-' if s is None else f'{s:,}'}" for m, s in sizes.items()))
            own = sizes[contender]
            others = [s for m, s in sizes.items() if m != contender]
            wins[drop].append(own is not None and all(s is None or own < s for s in others))
        lines.append(f"| {seed} | {dense:.2%} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"{contender} strictly fewest: " + "; ".join(
        f"dense - {d:.1f}: {sum(w)} of {len(w)} seeds" for d, w in wins.items()))
    lines.append("")
    lines.append(f"Every point ({what}, validation accuracy, what):")
    for seed in seeds:
        for method in methods:
            found, _ = points(out, method, seed, targets, metric)
            found.sort()
            lines.append(f"- seed {seed} {method}: " + "; ".join(f"{s:,} {a:.2%} ({w})" for s, a, w in found))
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--data-dir", default=os.environ.get("DEEPHOYER_DATA_DIR"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--methods", nargs="+", default=["hs", "l1", "magnitude"], choices=METHODS)
    parser.add_argument("--targets", type=float, nargs="+", default=list(TARGETS),
                        help="magnitude pruning's final sparsities")
    parser.add_argument("--metric", choices=sorted(METRICS), default="weights",
                        help="the size on the fronts: nonzero weights, or MACs (the structural methods)")
    parser.add_argument("--table", action="store_true", help="print the table of finished runs and exit")
    parser.add_argument("--full-front", action="store_true",
                        help="measure every ratio of FULL_GRID on the finished penalty runs (front.json)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    if args.full_front:
        for seed in args.seeds:
            for method in [m for m in args.methods if m != "magnitude"]:
                full_front(args.out, method, seed, args.data_dir, print)
    elif not args.table:
        start = time.time()
        for method, seed, target in runs_of(args.seeds, args.methods, args.targets):
            run_one(args.out, args.data_dir, method, seed, target, print)
        print(f"all runs finished, {time.time() - start:.0f} s")
    print(table(args.out, args.seeds, args.methods, args.targets, metric=args.metric))


if __name__ == "__main__":
    main()
