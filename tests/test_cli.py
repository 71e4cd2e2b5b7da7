"""The deephoyer-tf command line: reproduce --quick, report (issue 4)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REQUIRED = [
    "model", "method", "test_accuracy", "validation_accuracy", "dense_test_accuracy",
    "nonzero_weights", "total_weights", "macs", "dense_macs", "structure", "per_layer",
    "epochs", "wall_seconds",
]

pytestmark = pytest.mark.slow  # command-line and example runs in fresh processes


def _cli(*args, env=None, timeout=420):
    command = [sys.executable, "-m", "deephoyer_tf.cli", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result.stdout


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    return {**os.environ, "DEEPHOYER_CACHE_DIR": str(tmp_path_factory.mktemp("cache")), "TF_CPP_MIN_LOG_LEVEL": "2"}


@pytest.fixture(scope="module")
def quick_hs(tmp_path_factory, mnist_dir, env):
    out = tmp_path_factory.mktemp("out")
    stdout = _cli("reproduce", "lenet-300-100", "--method", "hs", "--quick", "--plots",
                  "--data-dir", mnist_dir, "--output", str(out), env=env)
    return out, stdout


def test_console_script_is_installed():
    assert shutil.which("deephoyer-tf") is not None


def test_reproduce_quick_writes_results(quick_hs):
    out, stdout = quick_hs
    results = json.loads((out / "results.json").read_text())
    assert not [k for k in REQUIRED if k not in results]
    assert results["model"] == "lenet-300-100" and results["method"] == "hs"
    assert results["total_weights"] == 266200
    assert 0 < results["nonzero_weights"] < results["total_weights"]
    assert results["dense_macs"] == 266200 and results["macs"] <= results["dense_macs"]
    assert [layer["name"] for layer in results["per_layer"]] == ["fc1", "fc2", "fc3"]
    assert sum(layer["nonzero_weights"] for layer in results["per_layer"]) == results["nonzero_weights"]
    assert 0.5 < results["test_accuracy"] <= 1.0
    assert (out / "model.keras").exists()
    # Progress, the paper-format table with the paper's row, accuracy and wall time.
    assert "[regularize]" in stdout and "[finetune]" in stdout
    # The printed table is the one of the written results (ours beside the paper's row).
    from deephoyer_tf.paper import reproduce

    assert reproduce.format_results(results).split("wall time")[0] in stdout
    ours = next(line for line in stdout.splitlines() if line.strip().startswith("ours"))
    assert f"{results['test_accuracy']:.2%}" in ours and f"{results['nonzero_weights']:,}" in ours
    assert f"{results['paper']['test_accuracy']:.2%}" in stdout


def test_reproduce_quick_plots_writes_the_histograms(quick_hs):
    import numpy as np

    from deephoyer_tf.paper import plots

    out, _ = quick_hs
    png = (out / "histograms.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    stages = plots.load_stages(out)
    assert list(stages) == ["dense", "regularized", "final"]
    results = json.loads((out / "results.json").read_text())
    assert sum(np.count_nonzero(k) for k in stages["final"].values()) == results["nonzero_weights"]
    assert [k.shape for k in stages["dense"].values()] == [(784, 300), (300, 100), (100, 10)]


def test_report_of_the_saved_model_matches_results(quick_hs, env):
    out, _ = quick_hs
    results = json.loads((out / "results.json").read_text())
    stdout = _cli("report", str(out / "model.keras"), "--json", env=env)
    report = json.loads(stdout[stdout.index("{"):])
    assert report["nonzero_weights"] == results["nonzero_weights"]
    assert report["structure"] == results["structure"]
    table = _cli("report", str(out / "model.keras"), env=env)
    assert "fc1" in table and f"{results['nonzero_weights']:,}" in table


def test_magnitude_baseline_quick(tmp_path, mnist_dir, env):
    """MagnitudePruning on Keras 3 (the TFMOT cross-check is the search's tfmot-magnitude method)."""
    stdout = _cli("reproduce", "lenet-300-100", "--method", "magnitude", "--quick",
                  "--target-sparsity", "0.9", "--data-dir", mnist_dir, "--output", str(tmp_path), env=env)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["method"] == "magnitude" and results["target_sparsity"] == 0.9
    # PolynomialDecay reaches the target sparsity in each layer.
    assert results["nonzero_weights"] == pytest.approx(0.1 * 266200, rel=0.01)
    assert "[magnitude]" in stdout


def test_report_of_a_missing_file_fails_clearly(env):
    command = [sys.executable, "-m", "deephoyer_tf.cli", "report", "/nonexistent/model.keras"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "deephoyer-tf report: no such file: /nonexistent/model.keras" in result.stderr


def test_bad_method_is_rejected_by_the_parser(env):
    command = [sys.executable, "-m", "deephoyer_tf.cli", "reproduce", "lenet-5", "--method", "l0"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2 and "invalid choice: 'l0'" in result.stderr


def test_export_command_shrinks_and_writes_a_smaller_sparse_file(quick_hs, tmp_path, env):
    out, _ = quick_hs
    sparse = _cli("export", str(out / "model.keras"), str(tmp_path / "s.tflite"), "--shrink", env=env)
    dense = _cli("export", str(out / "model.keras"), str(tmp_path / "d.tflite"), "--dense", env=env)
    assert "max abs error" in sparse and "max abs error" in dense
    assert (tmp_path / "s.tflite").stat().st_size < (tmp_path / "d.tflite").stat().st_size


def test_export_int8_without_data_fails_clearly(quick_hs, tmp_path, env):
    out, _ = quick_hs
    command = [sys.executable, "-m", "deephoyer_tf.cli", "export", str(out / "model.keras"),
               str(tmp_path / "q.tflite"), "--quantize", "int8"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 2
    assert "--quantize int8 needs --representative-data FILE.npy" in result.stderr


def test_reproduce_takes_a_dataset_choice():
    from deephoyer_tf import cli

    parser = cli.build_parser()
    args = parser.parse_args(["reproduce", "lenet-5", "--method", "hs", "--dataset", "fashion-mnist"])
    assert args.dataset == "fashion-mnist"
    assert parser.parse_args(["reproduce", "lenet-5", "--method", "hs"]).dataset == "mnist"
    with pytest.raises(SystemExit):
        parser.parse_args(["reproduce", "lenet-5", "--method", "hs", "--dataset", "cifar"])
