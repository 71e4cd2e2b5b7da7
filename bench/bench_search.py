"""The search, method by method, at the same budget on one network; then each chosen model's test accuracy, once.

    python bench/bench_search.py --model lenet-300-100 --methods hs l1 group-hs group-lasso \
        --trials 8 --regularize-epochs 10 --finetune-epochs 5 --data-dir ../shared/data/mnist \
        --output runs/bench-search --storage sqlite:///runs/bench-search/studies.db

Each method's search runs in its own process (``deephoyer-tf search``; TFMOT's
``magnitude`` switches tf.keras to Keras 2, so it must have its own) with
the same storage, so an interrupted benchmark continues where it stopped
when run again (a finished study is not rerun: pass more --trials to add).
After all searches, this script loads each chosen model and reads the test
split once; results go to OUTPUT/summary.json and one Pareto plot with every
method (nonzero weights; MACs for the group methods).
"""

import argparse
import json
import os
import pathlib
import subprocess
import sys
import time


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="lenet-300-100")
    parser.add_argument("--methods", nargs="+", default=["hs", "l1", "group-hs", "group-lasso"])
    parser.add_argument("--trials", type=int, default=8, help="trials per method (in total)")
    parser.add_argument("--regularize-epochs", type=int, default=10)
    parser.add_argument("--finetune-epochs", type=int, default=5)
    parser.add_argument("--warmup-epochs", type=int, default=2)
    parser.add_argument("--max-drop", type=float, default=0.2)
    parser.add_argument("--per-layer", action="store_true")
    parser.add_argument("--data-dir", default="../shared/data/mnist")
    parser.add_argument("--output", default="runs/bench-search")
    parser.add_argument("--storage", default=None)
    parser.add_argument("--tag", default="", help="suffix of the study names")
    parser.add_argument("--plot-only", action="store_true", help="redraw the plot from summary.json")
    args = parser.parse_args()
    out = pathlib.Path(args.output)
    if args.plot_only:
        rows = json.loads((out / f"summary{args.tag}.json").read_text())
        plot(rows, out / f"pareto-{args.model}{args.tag}.png", args.model, args.max_drop)
        return
    out.mkdir(parents=True, exist_ok=True)
    storage = args.storage or f"sqlite:///{(out / 'studies.db').resolve()}"
    walls = {}
    for method in args.methods:
        folder = out / f"{args.model}-{method}{args.tag}"
        done = 0
        if (folder / "search.json").exists():
            done = sum(t["state"] in ("COMPLETE", "PRUNED") for t in
                       json.loads((folder / "search.json").read_text())["trials"])
        if done >= args.trials:
            print(f"{method}: {done} trials done already", flush=True)
            continue
        command = [sys.executable, "-m", "deephoyer_tf.cli", "search", args.model, "--method", method,
                   "--trials", str(args.trials - done), "--storage", storage,
                   "--study-name", f"{args.model}-{method}{args.tag}", "--output", str(folder),
                   "--max-drop", str(args.max_drop), "--data-dir", args.data_dir,
                   "--regularize-epochs", str(args.regularize_epochs),
                   "--finetune-epochs", str(args.finetune_epochs), "--warmup-epochs", str(args.warmup_epochs)]
        if args.per_layer:
            command.append("--per-layer")
        print(" ".join(command), flush=True)
        start = time.time()
        subprocess.run(command, check=True)
        walls[method] = round(time.time() - start, 1)
    summarize(args, out, walls)


def summarize(args, out, walls):
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np

    from deephoyer_tf.paper import datasets

    data = datasets.load_mnist(args.data_dir)
    rows = {}
    for method in args.methods:
        summary = json.loads((out / f"{args.model}-{method}{args.tag}" / "search.json").read_text())
        chosen = summary["chosen"]
        row = {"method": method, "size_metric": summary["size_metric"], "trials": summary["n_trials"],
               "states": summary["states"], "dense_validation_accuracy": summary["dense_validation_accuracy"],
               "pareto": [t for t in summary["trials"] if t["number"] in summary["pareto"]],
               "chosen": chosen, "search_wall_seconds": walls.get(method)}
        if chosen:
            model = keras.models.load_model(chosen["model_path"], compile=False)
            logits = model.predict(data.x_test, batch_size=1000, verbose=0)
            row["chosen_test_accuracy"] = float(np.mean(np.argmax(logits, -1) == data.y_test))  # once
        rows[method] = row
        print(method, {k: row.get(k) for k in ("chosen_test_accuracy",)},
              chosen and {k: chosen[k] for k in ("number", "params", "validation_accuracy",
                                                  "nonzero_weights", "macs", "structure")}, flush=True)
    (out / f"summary{args.tag}.json").write_text(json.dumps(rows, indent=2))
    plot(rows, out / f"pareto-{args.model}{args.tag}.png", args.model, args.max_drop)


def plot(rows, path, model, max_drop):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("nonzero_weights", "macs")):
        for i, (method, row) in enumerate(rows.items()):
            if row["size_metric"] != metric:
                continue
            front = sorted(row["pareto"], key=lambda t: t[metric])
            ax.step([t[metric] for t in front], [100 * t["validation_accuracy"] for t in front], "o-",
                    where="post", color=f"C{i}", label=method)
            if row["chosen"]:
                c = row["chosen"]
                ax.plot([c[metric]], [100 * c["validation_accuracy"]], "*", ms=14, color=f"C{i}")
        dense = next(iter(rows.values()))["dense_validation_accuracy"]
        ax.axhline(100 * dense, color="k", lw=0.8, ls=":", label="dense")
        ax.axhline(100 * dense - max_drop, color="C3", lw=0.8, ls="--", label=f"dense - {max_drop:g}")
        ax.set_xscale("log")
        ax.set_xlabel("MACs" if metric == "macs" else "nonzero weights")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_ylim(100 * dense - 3, 100 * dense + 0.5)
        ax.legend(fontsize=8)
    fig.suptitle(f"{model}: Pareto fronts of the searches (stars: chosen, within the max drop)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
