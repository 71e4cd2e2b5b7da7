"""``reproduce --quick`` killed (SIGKILL) mid-stage and run again ends where an uninterrupted run ends.

The reduced form of ``bench/bench_faults.py`` (random kill times, ten per
command, every written file corrupted in turn; results in BENCHMARKS.md):
here two kills at fixed points of the log, so that the test is deterministic.
"""

import json
import os
import signal
import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def _command(mnist_dir, out):
    return [sys.executable, "-m", "deephoyer_tf.cli", "reproduce", "lenet-300-100", "--method", "hs", "--quick",
            "--finetune-epochs", "2", "--data-dir", mnist_dir, "--output", str(out)]


def _run(command, env, kill_at=()):
    """Runs `command`; SIGKILLs it once lines starting with each of `kill_at`, in order, were printed."""
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                               start_new_session=True)
    lines = []
    for line in process.stdout:
        lines.append(line.rstrip("\n"))
        if kill_at and line.startswith(kill_at[0]):
            kill_at = kill_at[1:]
            if not kill_at:
                os.killpg(process.pid, signal.SIGKILL)
                break
    process.wait(timeout=600)
    process.stdout.close()
    return process.returncode, lines


def _result(out):
    results = json.loads((out / "results.json").read_text())
    return results["nonzero_weights"], results["test_accuracy"], results["std_ratio"]


def test_reproduce_killed_twice_ends_with_the_uninterrupted_result(tmp_path, mnist_dir):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "DEEPHOYER_CACHE_DIR": str(tmp_path / "cache")}
    rc, lines = _run(_command(mnist_dir, tmp_path / "whole"), env)
    assert rc == 0, "\n".join(lines[-30:])
    whole = _result(tmp_path / "whole")

    out = tmp_path / "killed"
    # 1: in the regularized training, once its first epoch is backed up
    rc, lines = _run(_command(mnist_dir, out), env, kill_at=("[regularize]", "Epoch 2/2"))
    assert rc == -signal.SIGKILL and (out / "checkpoints" / "regularize.backup").is_dir()
    # 2: the rerun, killed in the fine-tuning, once its first epoch is backed up
    rc, lines = _run(_command(mnist_dir, out), env, kill_at=("[finetune]", "Epoch 2/2"))
    assert rc == -signal.SIGKILL, "\n".join(lines[-30:])
    assert any(line.startswith("[regularize] resuming from the backup") and "1 of 2 epochs done" in line
               for line in lines), lines
    assert (out / "checkpoints" / "finetune.backup").is_dir() or (out / "checkpoints" / "finetuned.npz").exists()
    # 3: the rerun completes
    rc, lines = _run(_command(mnist_dir, out), env)
    assert rc == 0, "\n".join(lines[-30:])
    assert any(line.startswith("[regularize] done in an earlier run") for line in lines)
    assert any(line.startswith("[select] chosen in an earlier run") for line in lines)
    nonzero, accuracy, ratio = _result(out)
    assert (nonzero, ratio) == whole[::2] and accuracy == pytest.approx(whole[1], abs=0.002)
    assert not (out / "checkpoints").exists()
    assert not [p.name for p in out.iterdir() if ".tmp-" in p.name]  # no temporary file left behind
