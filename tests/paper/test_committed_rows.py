"""The committed models of the paper's rows evaluate to their committed numbers (issue 18)."""

import json
import pathlib

import pytest

from deephoyer_tf import cli

ROWS = sorted((pathlib.Path(__file__).resolve().parents[2] / "bench" / "results" / "paper").glob("*/results.json"))


@pytest.mark.slow
@pytest.mark.parametrize("results_path", ROWS, ids=[p.parent.name for p in ROWS])
def test_committed_model_evaluates_to_its_numbers(results_path, mnist_dir, capsys):
    committed = json.loads(results_path.read_text())["committed_model"]
    assert cli.main(["evaluate", str(results_path.parent / "model.keras"), "--data-dir", mnist_dir]) == 0
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert abs(result["accuracy"] - committed["test_accuracy"]) <= 1e-4  # within 0.01 points
    assert result["nonzero_weights"] == committed["nonzero_weights"]
    assert result["macs"] == committed["macs"]
    assert result["structure"] == committed["structure"]


def test_every_paper_row_is_committed():
    names = {p.parent.name for p in ROWS}
    assert names >= {"lenet-300-100-hs", "lenet-5-hs", "lenet-300-100-group-hs", "lenet-5-group-hs"}, names
