"""The replication study of issue 18: variants of `reproduce`'s recipe, one change at a time.

Each variant is a `deephoyer_tf.paper.reproduce` recipe (``--recipe`` default
or authors, plus field overrides); it runs with `reproduce.run` into
``OUT/<variant>/`` (resumable: run the same command again after an
interruption; a finished variant, one with ``results.json``, is skipped) and
``OUT/summary.json`` collects every finished variant's numbers. Choices are
made on the validation split; the test accuracy of each variant is its final
model's, read once at the end of its run.

    python bench/bench_replication.py --out runs/replication --data-dir ../shared/data/mnist \\
        --variants default cosine unit biases ...
    python bench/bench_replication.py --out runs/replication --table   # the Markdown table

Variants are named ``BASE[+CHANGE...]`` with BASE ``default`` or ``authors``
and each CHANGE ``field=value`` of `reproduce.Recipe` (``seed=1``,
``regularize_schedule=cosine``, ``strength=2e-4``, ``std_ratio=none``, ...),
or one of the shorthands in `SHORTHANDS`.
"""

import argparse
import dataclasses
import json
import os
import pathlib
import platform
import sys
import time

SHORTHANDS = {
    "cosine": {"regularize_schedule": "cosine"},
    "unit": {"inputs": "unit"},
    "biases": {"biases": True},
    "constant": {"regularize_schedule": "constant"},
}


def parse_variant(name):
    """``"default+cosine+strength=2e-4"`` -> ``("default", {...overrides})``."""
    base, *changes = name.split("+")
    if base not in ("default", "authors"):
        raise ValueError(f"Invalid variant {name!r}: it must start with 'default' or 'authors'.")
    overrides = {}
    for change in changes:
        if change in SHORTHANDS:
            overrides.update(SHORTHANDS[change])
            continue
        if "=" not in change:
            raise ValueError(f"Invalid change {change!r} in variant {name!r}: expected FIELD=VALUE "
                             f"or one of {sorted(SHORTHANDS)}.")
        key, value = change.split("=", 1)
        overrides[key] = _value(value)
    return base, overrides


def _value(text):
    if text.lower() in ("none", "null"):
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    if "," in text:
        return tuple(float(v) for v in text.split(","))
    return text


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True)
    parser.add_argument("--model", default="lenet-300-100", choices=["lenet-300-100", "lenet-5"])
    parser.add_argument("--method", default="hs")
    parser.add_argument("--variants", nargs="*", default=[])
    parser.add_argument("--data-dir")
    parser.add_argument("--cache-dir")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--table", action="store_true", help="print the summary as a Markdown table")
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    if args.table:
        print(table(json.loads((out / "summary.json").read_text())))
        return 0
    from deephoyer_tf.paper import reproduce

    for name in args.variants:
        folder = out / name
        if (folder / "results.json").exists():
            print(f"[{name}] done earlier: {folder / 'results.json'}", flush=True)
        else:
            base, overrides = parse_variant(name)
            recipe = reproduce.recipe_for(args.model, args.method, args.quick, name=base, **{
                k: v for k, v in overrides.items() if v is not None})
            recipe = dataclasses.replace(recipe, **{k: v for k, v in overrides.items() if v is None})
            print(f"[{name}] {recipe}", flush=True)
            started = time.time()
            results = reproduce.run(args.model, args.method, data_dir=args.data_dir, output=folder,
                                    cache_dir=args.cache_dir, recipe=recipe, quick=args.quick,
                                    log=lambda *a: print(*a, flush=True))
            results["command"] = " ".join([sys.executable.rsplit("/", 1)[-1], *sys.argv])
            results["variant_wall_seconds"] = round(time.time() - started, 1)
            reproduce._write_json(folder / "results.json", results)
        _collect(out)
    return 0


def _collect(out):
    rows = {}
    for path in sorted(out.glob("*/results.json")):
        r = json.loads(path.read_text())
        rows[path.parent.name] = {k: r.get(k) for k in (
            "model", "method", "test_accuracy", "validation_accuracy", "dense_validation_accuracy",
            "dense_test_accuracy", "nonzero_weights", "nonzero_biases", "total_weights", "macs",
            "structure", "std_ratio", "strength", "best_test_epoch_accuracy", "wall_seconds",
            "pretrain_cached", "date", "command")}
        rows[path.parent.name]["machine"] = f"{platform.machine()}, {os.cpu_count()} CPUs"
    tmp = out / "summary.json.partial"
    tmp.write_text(json.dumps(rows, indent=2))
    os.replace(tmp, out / "summary.json")


def table(rows):
    lines = ["| variant | std ratio | nonzero weights (+ biases) | MACs | structure | val acc | test acc "
             "| best-test-epoch acc (authors' report) | wall s |", "|" + "---|" * 9]
    for name, r in rows.items():
        best = r.get("best_test_epoch_accuracy")
        lines.append(
            f"| `{name}` | {r['std_ratio']:g} | {r['nonzero_weights']:,} (+{r['nonzero_biases']}) | "
            f"{r['macs']:,} | {r['structure']} | {r['validation_accuracy']:.2%} | {r['test_accuracy']:.2%} | "
            f"{'-' if best is None else f'{best:.2%}'} | {r['wall_seconds']:.0f} |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
