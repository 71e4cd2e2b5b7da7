"""The examples run (quick mode), as the README shows them."""

import os
import pathlib
import subprocess
import sys

import pytest

EXAMPLES = pathlib.Path(__file__).resolve().parents[2] / "examples"

pytestmark = pytest.mark.slow  # command-line and example runs in fresh processes


def test_mnist_three_stages_quick(mnist_dir):
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "mnist_three_stages.py"), "--quick", "--data-dir", mnist_dir],
        capture_output=True, text=True, timeout=300,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "zeros held exactly through fine-tuning: True" in result.stdout
    assert "Sparsity report" in result.stdout and "fc1" in result.stdout
