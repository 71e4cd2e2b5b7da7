#!/usr/bin/env bash
# Strength sweep on the validation split (run by hand; results in BENCHMARKS.md).
# usage: bench/sweep.sh MODEL METHOD OUTDIR STRENGTH... (extra flags via $EXTRA)
set -u
model=$1; method=$2; out=$3; shift 3
for s in "$@"; do
  deephoyer-tf reproduce "$model" --method "$method" --strength "$s" \
    --data-dir "${DATA_DIR:-../shared/data/mnist}" --output "$out/$model-$method-s$s" ${EXTRA:-} \
    > "$out/$model-$method-s$s.log" 2>&1
  python - "$out/$model-$method-s$s/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"{r['model']} {r['method']} strength={r['recipe']['strength']:g} ratio={r.get('std_ratio')} "
      f"val={r['validation_accuracy']:.4f} nonzero={r['nonzero_weights']} macs={r['macs']} "
      f"structure={r['structure']} wall={r['wall_seconds']}s")
PY
done
