#!/usr/bin/env bash
# Runs `deephoyer-tf reproduce` jobs one after another (by hand; see BENCHMARKS.md).
# usage: bench/queue.sh OUTDIR "MODEL METHOD [flags...]" ...
set -u
out=$1; shift
mkdir -p "$out"
for job in "$@"; do
  set -- $job
  model=$1; method=$2; shift 2
  name="$model-$method$(echo "$*" | sed -E 's#--match [^ ]+#-matched#; s#--strength #-s#; s#[^A-Za-z0-9.-]##g')"
  echo "$(date +%H:%M:%S) start $name: $*"
  deephoyer-tf reproduce "$model" --method "$method" --data-dir "${DATA_DIR:-../shared/data/mnist}" \
    --output "$out/$name" "$@" > "$out/$name.log" 2>&1
  python - "$out/$name/results.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
print(f"  {r['model']} {r['method']} strength={r['recipe']['strength']:g} ratio={r.get('std_ratio')} "
      f"val={r['validation_accuracy']:.4f} dense_val={r['dense_validation_accuracy']:.4f} "
      f"nonzero={r['nonzero_weights']} macs={r['macs']} structure={r['structure']} wall={r['wall_seconds']}s", flush=True)
PY
done
