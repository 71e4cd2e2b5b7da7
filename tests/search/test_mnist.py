"""`search.lenet` and ``deephoyer-tf search``: the LeNets on MNIST, the test split never read."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("optuna")

from deephoyer_tf import search  # noqa: E402
from deephoyer_tf.paper import datasets  # noqa: E402


class _NoTest:
    """MNIST-shaped splits whose test arrays raise when read."""

    def __init__(self, seed=0):
        rng = np.random.default_rng(seed)
        self.y_train, self.y_val = rng.integers(0, 10, 600), rng.integers(0, 10, 200)
        self.x_train = rng.normal(size=(600, 28, 28, 1)).astype("float32") + self.y_train[:, None, None, None]
        self.x_val = rng.normal(size=(200, 28, 28, 1)).astype("float32") + self.y_val[:, None, None, None]
        self.mean, self.std = 0.0, 1.0
        self.reads = []

    @property
    def x_test(self):
        self.reads.append("x_test")
        raise AssertionError("the search read the test images")

    @property
    def y_test(self):
        self.reads.append("y_test")
        raise AssertionError("the search read the test labels")


@pytest.mark.slow
def test_the_search_never_reads_the_test_split(tmp_path, monkeypatch):
    splits = _NoTest()
    requested = []

    def load_dataset(name, data_dir=None, **kwargs):
        requested.append(name)
        return splits

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    result = search.lenet("lenet-300-100", "hs", n_trials=1, output=tmp_path / "out", quick=True,
                          cache_dir=tmp_path / "cache", regularize_epochs=1, finetune_epochs=1,
                          log=lambda *a: None)
    assert requested == ["mnist"] and splits.reads == []
    assert [t["state"] for t in result.trials] == ["COMPLETE"]
    # the first trial of a new study is reproduce's recipe
    from deephoyer_tf.paper import reproduce
    recipe = reproduce.recipe_for("lenet-300-100", "hs", quick=True)
    assert result.trials[0]["params"] == {"strength": recipe.strength, "std_ratio": 0.1}


def _cli(*args, env):
    command = [sys.executable, "-m", "deephoyer_tf.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.mark.slow
def test_search_command_writes_search_json_and_continues_the_study(tmp_path, mnist_dir):
    """The acceptance command, twice: the second run continues the study (4 trials in the file)."""
    env = {**os.environ, "DEEPHOYER_CACHE_DIR": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "2"}
    args = ["search", "lenet-300-100", "--method", "hs", "--trials", "2", "--quick",
            "--storage", f"sqlite:///{tmp_path / 'S.db'}", "--study-name", "T",
            "--output", str(tmp_path / "OUT"), "--data-dir", mnist_dir]
    first = _cli(*args, env=env)
    summary = json.loads((tmp_path / "OUT" / "search.json").read_text())
    assert summary["n_trials"] == 2
    second = _cli(*args, env=env)
    summary = json.loads((tmp_path / "OUT" / "search.json").read_text())
    assert [t["number"] for t in summary["trials"]] == [0, 1, 2, 3]
    for trial in summary["trials"]:
        assert trial["state"] in ("COMPLETE", "PRUNED")
        assert set(trial["params"]) == {"strength", "std_ratio"}
        if trial["state"] == "COMPLETE":
            assert 0 < trial["nonzero_weights"] <= 266200 and 0 < trial["macs"] <= 266200
            assert 0.1 < trial["validation_accuracy"] <= 1.0
    assert set(summary["pareto"]) <= {0, 1, 2, 3}
    assert summary["chosen"] is None or summary["chosen"]["number"] in {0, 1, 2, 3}
    assert (tmp_path / "OUT" / "pareto.png").read_bytes()[:4] == b"\x89PNG"
    # one progress line per trial, the dense model trained once then reused from the cache
    assert [line.split()[1] for line in (first + second).splitlines() if line.startswith("[trial ")] == \
        ["0]", "1]", "2]", "3]"]
    assert "[pretrain] reusing" in second and "2 trials stored, running 2 more" in second
    assert "files written:" in second and str(tmp_path / "OUT" / "search.json") in second


def test_search_parser_takes_the_documented_options():
    from deephoyer_tf import cli

    args = cli.build_parser().parse_args([
        "search", "lenet-5", "--method", "group-hs", "--trials", "3", "--storage", "sqlite:///x.db",
        "--study-name", "n", "--output", "o", "--max-drop", "0.5", "--quick", "--data-dir", "d",
        "--per-layer"])
    assert (args.model, args.method, args.trials, args.storage, args.study_name, args.output,
            args.max_drop, args.quick, args.data_dir, args.per_layer) == (
        "lenet-5", "group-hs", 3, "sqlite:///x.db", "n", "o", 0.5, True, "d", True)
    assert cli.build_parser().parse_args(["search", "lenet-5", "--method", "hs", "--trials", "1"]).max_drop == 0.2
