"""Fault injection: SIGKILL at random points, and every file the package writes corrupted in turn.

    python bench/bench_faults.py --data-dir ../shared/data/mnist --out /tmp/faults --kills 10

Three parts (``--parts kill-reproduce,kill-search,corrupt``):

* ``kill-reproduce``: ``deephoyer-tf reproduce lenet-300-100 --method hs --quick``
  started `--kills` times, each with a fresh output and cache folder, killed
  (SIGKILL to its process group) at a uniformly random time within the
  uninterrupted run's wall time, then run again to completion. Each rerun
  must exit 0 and give the uninterrupted run's nonzero weights and test
  accuracy (run-to-run noise measured with a second uninterrupted run).
* ``kill-search``: the same for ``deephoyer-tf search lenet-300-100 --method
  hs --trials 2 --quick``: the rerun (``--trials 2`` again, at once, within
  Optuna's heartbeat grace period) must exit 0, leave no RUNNING trial, have
  at least 2 COMPLETE trials, retry the killed trial (same parameters), and
  every COMPLETE trial whose parameters are those of a trial of the
  uninterrupted search must have its nonzero weights and validation accuracy.
* ``corrupt``: a run interrupted where a given file exists (a KeyboardInterrupt
  raised inside the package at that point), the file truncated to a third or
  overwritten with random bytes, then the command run again: it must exit 0
  with a message naming the file, and give the uninterrupted run's result; or,
  for the Optuna storage, exit non-zero with a ValueError naming the path.

Results: a JSON summary in ``OUT/faults.json`` and a table on stdout.
"""

import argparse
import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # this checkout's package, not an installed one
REPRODUCE = ["reproduce", "lenet-300-100", "--method", "hs", "--quick"]
SEARCH = ["search", "lenet-300-100", "--method", "hs", "--trials", "2", "--quick"]


def _env(cache):
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "DEEPHOYER_CACHE_DIR": str(cache),
            "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}


def _cli(args, cache, log, kill_after=None, driver=None):
    """Runs the CLI (or the interrupting driver); kills it after `kill_after` seconds if given."""
    command = [sys.executable, "-m", "deephoyer_tf.cli", *args] if driver is None else \
        [sys.executable, str(pathlib.Path(__file__).resolve()), "--driver", driver, "--", *args]
    start = time.time()
    pathlib.Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "w") as out:
        process = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=_env(cache),
                                   cwd=REPO, start_new_session=True)
        try:
            process.wait(timeout=kill_after)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode, time.time() - start


def _reproduce_args(out, data_dir, extra=()):
    return [*REPRODUCE, *extra, "--data-dir", data_dir, "--output", str(out)]


def _results(out):
    r = json.loads((out / "results.json").read_text())
    return {"nonzero": r["nonzero_weights"], "test": r["test_accuracy"], "val": r["validation_accuracy"],
            "std_ratio": r.get("std_ratio")}


def _last_stage(log):
    lines = [line for line in pathlib.Path(log).read_text().splitlines() if line.startswith("[")]
    return lines[-1].split("]")[0] + "]" if lines else "(start-up)"


def kill_reproduce(root, data_dir, kills, rng, report):
    refs = []
    for i in range(2):
        out = root / f"ref{i}"
        rc, seconds = _cli(_reproduce_args(out / "run", data_dir), out / "cache", out / "log.txt")
        assert rc == 0, (out / "log.txt").read_text()[-3000:]
        refs.append({**_results(out / "run"), "seconds": round(seconds, 1)})
    ref = refs[0]
    noise = abs(refs[0]["test"] - refs[1]["test"])
    rows = []
    for i in range(kills):
        out = root / f"kill{i}"
        at = rng.uniform(0.5, refs[0]["seconds"])
        rc_killed, _ = _cli(_reproduce_args(out / "run", data_dir), out / "cache", out / "killed.txt", kill_after=at)
        rc, seconds = _cli(_reproduce_args(out / "run", data_dir), out / "cache", out / "rerun.txt")
        got = _results(out / "run") if rc == 0 else {}
        ok = rc == 0 and got["nonzero"] == ref["nonzero"] and abs(got["test"] - ref["test"]) <= noise + 1e-9
        resumed = [line for line in (out / "rerun.txt").read_text().splitlines()
                   if "resuming" in line or "earlier run" in line or "reusing" in line or "cannot" in line]
        rows.append({"kill_at_s": round(at, 1), "killed_rc": rc_killed, "killed_in": _last_stage(out / "killed.txt"),
                     "rerun_rc": rc, "rerun_s": round(seconds, 1), **got, "same": ok, "resumed": resumed})
        print(f"  reproduce kill {i}: at {at:.1f} s in {rows[-1]['killed_in']}, rerun rc {rc}, "
              f"nonzero {got.get('nonzero')} (ref {ref['nonzero']}), test {got.get('test')}: "
              f"{'same' if ok else 'DIFFERENT'}", flush=True)
    report["kill_reproduce"] = {"references": refs, "noise": noise, "kills": rows,
                                "all_same": all(r["same"] for r in rows)}


def _search_args(out, data_dir):
    return [*SEARCH, "--data-dir", data_dir, "--output", str(out), "--storage", f"sqlite:///{out}/study.db"]


def _trials(out):
    summary = json.loads((out / "search.json").read_text())
    return summary["trials"]


def _key(params):
    return json.dumps(sorted(params.items()))


def kill_search(root, data_dir, kills, rng, report):
    refs = []
    for i in range(2):
        out = root / f"sref{i}"
        (out / "run").mkdir(parents=True, exist_ok=True)
        rc, seconds = _cli(_search_args(out / "run", data_dir), out / "cache", out / "log.txt")
        assert rc == 0, (out / "log.txt").read_text()[-3000:]
        refs.append({"trials": _trials(out / "run"), "seconds": round(seconds, 1)})
    reference = {_key(t["params"]): t for t in refs[0]["trials"] if t["state"] == "COMPLETE"}
    noise = max((abs(a["validation_accuracy"] - b["validation_accuracy"])
                 for a, b in zip(refs[0]["trials"], refs[1]["trials"]) if a["state"] == b["state"] == "COMPLETE"),
                default=0.0)
    rows = []
    for i in range(kills):
        out = root / f"skill{i}"
        (out / "run").mkdir(parents=True, exist_ok=True)
        at = rng.uniform(0.5, refs[0]["seconds"])
        rc_killed, _ = _cli(_search_args(out / "run", data_dir), out / "cache", out / "killed.txt", kill_after=at)
        rc, seconds = _cli(_search_args(out / "run", data_dir), out / "cache", out / "rerun.txt")
        trials = _trials(out / "run") if rc == 0 else []
        states = [t["state"] for t in trials]
        compared = [t for t in trials if t["state"] == "COMPLETE" and _key(t["params"]) in reference]
        same = all(t["nonzero_weights"] == reference[_key(t["params"])]["nonzero_weights"]
                   and abs(t["validation_accuracy"] - reference[_key(t["params"])]["validation_accuracy"])
                   <= noise + 1e-9 for t in compared)
        retried = all(any(r["retry_of"] == t["number"] and r["params"] == t["params"] for r in trials)
                      for t in trials if t["state"] == "FAIL")
        ok = rc == 0 and "RUNNING" not in states and states.count("COMPLETE") >= 2 and same and retried
        rows.append({"kill_at_s": round(at, 1), "killed_rc": rc_killed, "killed_in": _last_stage(out / "killed.txt"),
                     "rerun_rc": rc, "rerun_s": round(seconds, 1), "states": states,
                     "compared_with_reference": len(compared), "same": same, "retried": retried, "ok": ok})
        print(f"  search kill {i}: at {at:.1f} s in {rows[-1]['killed_in']}, rerun rc {rc}, states {states}, "
              f"{len(compared)} trials compared: {'ok' if ok else 'FAILED'}", flush=True)
    report["kill_search"] = {"references": [{"seconds": r["seconds"], "trials": [
        {k: t[k] for k in ("number", "state", "params", "nonzero_weights", "validation_accuracy")}
        for t in r["trials"]]} for r in refs], "noise": noise, "kills": rows, "all_ok": all(r["ok"] for r in rows)}


# --- corruption ------------------------------------------------------------------------------------

CORRUPT_EXTRA = ["--pretrain-epochs", "2", "--finetune-epochs", "2"]
# (name, where the driver interrupts, the file to corrupt (glob, relative to the output's parent), message)
CORRUPT_CASES = [
    ("dense cache (.keras)", None, "cache/*.keras", "cannot be loaded"),
    ("pretrain backup weights", "pretrain:0", "cache/*.backup/epoch-*/latest.weights.h5", "cannot be used"),
    ("pretrain backup metadata", "pretrain:0", "cache/*.backup/epoch-*/training_metadata.json", "cannot be used"),
    ("run stamp (run.json)", "select", "run/checkpoints/run.json", "is unreadable"),
    ("regularize backup weights", "regularize:0", "run/checkpoints/regularize.backup/epoch-*/latest.weights.h5",
     "cannot be used"),
    ("regularize backup metadata", "regularize:0",
     "run/checkpoints/regularize.backup/epoch-*/training_metadata.json", "cannot be used"),
    ("regularized.npz", "select", "run/checkpoints/regularized.npz", "cannot be used"),
    ("std_ratio.json", "finetune:0", "run/checkpoints/std_ratio.json", "is unreadable"),
    ("finetune backup weights", "finetune:0", "run/checkpoints/finetune.backup/epoch-*/latest.weights.h5",
     "cannot be used"),
    ("finetuned.npz", "strip", "run/checkpoints/finetuned.npz", "cannot be used"),
    ("results.json", None, "run/results.json", None),
    ("stages.npz", None, "run/stages.npz", None),
    ("model.keras", None, "run/model.keras", None),
]


def _corrupt(path, how):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3] if how == "truncate" else os.urandom(max(len(data), 64)))


def corrupt(root, data_dir, rng, report, both=False):
    """Each file of `CORRUPT_CASES` truncated to a third, or random bytes (alternately; both with `both`)."""
    ref = root / "cref"
    rc, _ = _cli(_reproduce_args(ref / "run", data_dir, CORRUPT_EXTRA), ref / "cache", ref / "log.txt")
    assert rc == 0, (ref / "log.txt").read_text()[-3000:]
    want = _results(ref / "run")
    rows = []
    for n, (name, interrupt, pattern, message) in enumerate(CORRUPT_CASES):
        for how in ("truncate", "random") if both else (("truncate", "random")[n % 2],):
            out = root / f"c{n}-{how}"
            args = _reproduce_args(out / "run", data_dir, CORRUPT_EXTRA)
            if interrupt is None:
                rc0, _ = _cli(args, out / "cache", out / "first.txt")
            else:
                rc0, _ = _cli(args, out / "cache", out / "first.txt", driver=interrupt)
            files = sorted(out.glob(pattern))
            if not files:
                rows.append({"file": name, "how": how, "ok": False, "why": f"no {pattern} (first rc {rc0})"})
                print(f"  corrupt {name} ({how}): NOT FOUND", flush=True)
                continue
            target = files[-1]
            _corrupt(target, how)
            rc, seconds = _cli(args, out / "cache", out / "rerun.txt")
            text = (out / "rerun.txt").read_text()
            named = [line for line in text.splitlines() if str(target) in line or target.name in line]
            said = message is None or any(message in line for line in named)
            got = _results(out / "run") if rc == 0 else {}
            same = rc == 0 and got["nonzero"] == want["nonzero"]
            ok = rc == 0 and said and same
            rows.append({"file": name, "how": how, "path": str(target.relative_to(out)), "rerun_rc": rc,
                         "message": named[0][:300] if named else None, "same": same, "ok": ok,
                         "rerun_s": round(seconds, 1)})
            print(f"  corrupt {name} ({how}): rc {rc}, same {same}, message: "
                  f"{named[0][:160] if named else '-'}", flush=True)
    # the Optuna storage: a clear error naming the file, before any training
    out = root / "cstudy"
    (out / "run").mkdir(parents=True, exist_ok=True)
    db = out / "run" / "study.db"
    db.write_bytes(os.urandom(4096))
    rc, _ = _cli(_search_args(out / "run", data_dir), out / "cache", out / "rerun.txt")
    text = (out / "rerun.txt").read_text()
    rows.append({"file": "study.db (random bytes)", "rerun_rc": rc, "ok": rc == 2 and str(db) in text
                 and "Invalid value for argument `storage`" in text and not (out / "cache").exists(),
                 "message": text.strip().splitlines()[-1][:300]})
    print(f"  corrupt study.db: rc {rc}: {rows[-1]['message'][:200]}", flush=True)
    report["corrupt"] = {"reference": want, "cases": rows, "all_ok": all(r["ok"] for r in rows)}


# --- the interrupting driver (run in a subprocess) ---------------------------------------------------


def driver(where, args):
    """Runs the CLI with a KeyboardInterrupt raised inside the package at `where`."""
    from deephoyer_tf import cli
    from deephoyer_tf.paper import reproduce
    from deephoyer_tf.training import resumable

    stage, _, epoch = where.partition(":")
    if stage in ("pretrain", "regularize", "finetune"):
        original = resumable.EpochBackup.on_epoch_end
        folder = {"pretrain": ".backup", "regularize": "regularize.backup", "finetune": "finetune.backup"}[stage]

        def on_epoch_end(self, e, logs=None):
            original(self, e, logs)
            if self.backup_dir.name.endswith(folder) and e == int(epoch):
                raise KeyboardInterrupt(f"interrupted after {stage} epoch {e}")

        resumable.EpochBackup.on_epoch_end = on_epoch_end
    elif stage == "select":
        def select(*a, **k):
            raise KeyboardInterrupt("interrupted in the selection")

        reproduce.select_std_ratio = select
    elif stage == "strip":
        def strip(*a, **k):
            raise KeyboardInterrupt("interrupted after the fine-tuning")

        reproduce.strip_zero_masks = strip
    try:
        return cli.main(args)
    except KeyboardInterrupt as e:
        print(f"[driver] {e}", flush=True)
        return 3


def main():
    if "--driver" in sys.argv:
        i = sys.argv.index("--driver")
        sys.exit(driver(sys.argv[i + 1], sys.argv[sys.argv.index("--") + 1:]))
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--out", default="/tmp/deephoyer-faults")
    parser.add_argument("--kills", type=int, default=10)
    parser.add_argument("--parts", default="kill-reproduce,kill-search,corrupt")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--both", action="store_true", help="corrupt: each file truncated and random (else alternately)")
    args = parser.parse_args()
    root = pathlib.Path(args.out)
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    data_dir = str(pathlib.Path(args.data_dir).resolve())
    rng = random.Random(args.seed)
    report = {"command": " ".join(sys.argv), "date": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())}
    start = time.time()
    parts = args.parts.split(",")
    if "kill-reproduce" in parts:
        print("kill-reproduce:", flush=True)
        kill_reproduce(root / "reproduce", data_dir, args.kills, rng, report)
    if "kill-search" in parts:
        print("kill-search:", flush=True)
        kill_search(root / "search", data_dir, args.kills, rng, report)
    if "corrupt" in parts:
        print("corrupt:", flush=True)
        corrupt(root / "corrupt", data_dir, rng, report, both=args.both)
    report["wall_seconds"] = round(time.time() - start, 1)
    (root / "faults.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v.get("all_same", v.get("all_ok")) for k, v in report.items() if isinstance(v, dict)}))
    print(f"wall time {report['wall_seconds']:.0f} s; details in {root / 'faults.json'}")


if __name__ == "__main__":
    main()
