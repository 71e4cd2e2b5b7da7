"""Markdown table of reproduction runs from their results.json files.

    python bench/collect_results.py runs/r3/*/results.json

One row per run: model, method, strength, the std ratio chosen on validation,
validation and test accuracy of the final model, nonzero kernel weights (and
compression), MACs (and reduction), structure, wall time, and the command
that reproduces it.
"""

import json
import sys


def row(path):
    r = json.load(open(path))
    recipe = r["recipe"]
    flags = []
    defaults_note = ""
    if r["method"] != "magnitude":
        flags.append(f"--strength {recipe['strength']:g}")
    else:
        flags.append(f"--target-sparsity {r['target_sparsity']:.6f}")
    command = f"deephoyer-tf reproduce {r['model']} --method {r['method']} " + " ".join(flags)
    ratio = r.get("std_ratio")
    strength = "-" if r["method"] == "magnitude" else f"{recipe['strength']:g}"
    return (
        f"| {r['model']} | {r['method']} | {strength} | "
        f"{'-' if ratio is None else f'{ratio:g}'} | {r['validation_accuracy']:.2%} | "
        f"{r['test_accuracy']:.2%} | {r['nonzero_weights']:,} ({r['total_weights'] / max(r['nonzero_weights'], 1):.0f}x) | "
        f"{r['macs']:,} ({r['dense_macs'] / max(r['macs'], 1):.1f}x) | {r['structure']} | "
        f"{r['wall_seconds']:.0f} | `{command}`{defaults_note} |"
    )


def main(paths):
    print("| model | method | strength | std ratio | val acc | test acc | nonzero weights | MACs | structure | wall s | command |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for path in paths:
        print(row(path))


if __name__ == "__main__":
    main(sys.argv[1:])
