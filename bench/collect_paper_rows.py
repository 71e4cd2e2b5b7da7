"""Commits one row of the paper's Table 1/2: per-seed runs -> bench/results/paper/<model>-<method>/.

    python bench/collect_paper_rows.py --row lenet-300-100-hs --runs runs/seed0 runs/seed1 runs/seed2 \\
        --command "deephoyer-tf reproduce lenet-300-100 --method hs --seed S ..."

Each run folder is a finished `reproduce` output (``results.json`` and
``model.keras``). The first run's model is copied to ``model.keras`` beside a
``results.json`` holding the recipe, the seeds, every seed's numbers, their
mean and standard deviation, the paper's row and the command. The committed
model is the final model of that seed: `deephoyer-tf evaluate` on it prints
that seed's numbers.

    python bench/collect_paper_rows.py --row lenet-5-hs --add --runs runs/seed1 runs/seed2 \
        --command "deephoyer-tf reproduce lenet-5 --method hs --seed S ..."

With ``--add`` the row already committed keeps its model and its seeds'
numbers, and the new runs' seeds are added to them (the runs must use the same
recipe, and a seed already in the row is refused); the mean and standard
deviation are computed again over every seed.
"""

import argparse
import json
import pathlib
import shutil
import sys

import numpy as np

from deephoyer_tf._internal import atomic

KEYS = ("test_accuracy", "validation_accuracy", "nonzero_weights", "nonzero_biases", "macs", "structure",
        "std_ratio", "dense_test_accuracy", "dense_validation_accuracy", "wall_seconds", "date",
        "best_test_epoch_accuracy")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--row", required=True, help="e.g. lenet-300-100-hs")
    parser.add_argument("--runs", nargs="+", required=True)
    parser.add_argument("--command", required=True)
    parser.add_argument("--out", default=str(pathlib.Path(__file__).parent / "results" / "paper"))
    parser.add_argument("--add", action="store_true",
                        help="add the runs' seeds to the row already committed (its model stays)")
    args = parser.parse_args(argv)
    folder = pathlib.Path(args.out) / args.row
    runs = [json.loads((pathlib.Path(r) / "results.json").read_text()) for r in args.runs]
    recipes = {_recipe_key(r["recipe"]) for r in runs}
    if len(recipes) != 1:
        raise SystemExit("the runs differ in more than their seed")
    per_seed = [{"seed": r["recipe"]["seed"], **{k: r.get(k) for k in KEYS}} for r in runs]
    if args.add:
        row = json.loads((folder / "results.json").read_text())
        if _recipe_key(row["recipe"]) not in recipes:
            raise SystemExit(f"the runs' recipe differs from the one committed in {folder / 'results.json'}")
        known = {entry["seed"] for entry in row["per_seed"]}
        repeated = sorted(known & {entry["seed"] for entry in per_seed})
        if repeated:
            raise SystemExit(f"seeds {repeated} are already in {folder / 'results.json'}")
        row["per_seed"] = row["per_seed"] + per_seed
        row["seeds"] = [entry["seed"] for entry in row["per_seed"]]
        row["mean_std"] = _summary(row["per_seed"])
        row["command"] = args.command
        atomic.atomic_write_text(folder / "results.json", json.dumps(row, indent=2))
        print(json.dumps(row["mean_std"]))
        return 0
    summary = _summary(per_seed)
    first = runs[0]
    row = {
        "row": args.row, "model": first["model"], "method": first["method"], "dataset": first["dataset"],
        "recipe": {k: v for k, v in first["recipe"].items() if k != "seed"},
        "seeds": [r["recipe"]["seed"] for r in runs], "per_seed": per_seed, "mean_std": summary,
        "committed_model": {"seed": first["recipe"]["seed"], **{k: first.get(k) for k in KEYS}},
        "paper": first.get("paper"), "command": args.command,
    }
    with atomic.atomic_path(folder / "model.keras") as tmp:
        shutil.copyfile(pathlib.Path(args.runs[0]) / "model.keras", tmp)
    atomic.atomic_write_text(folder / "results.json", json.dumps(row, indent=2))
    print(json.dumps(summary))
    return 0


def _recipe_key(recipe):
    return json.dumps({k: v for k, v in recipe.items() if k != "seed"}, sort_keys=True)


def _summary(per_seed):
    summary = {}
    for key in ("test_accuracy", "validation_accuracy", "nonzero_weights", "macs"):
        values = np.array([entry[key] for entry in per_seed], dtype=float)
        summary[key] = {"mean": float(values.mean()), "std": float(values.std(ddof=1)) if len(values) > 1 else 0.0}
    return summary


if __name__ == "__main__":
    sys.exit(main())
