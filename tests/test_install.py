"""The install extras and the test run's summary of backend runs (issue 21)."""

import pathlib
import runpy

import setuptools

from tests import conftest

REPO = pathlib.Path(__file__).resolve().parents[1]


def _extras(monkeypatch):
    captured = {}
    monkeypatch.setattr(setuptools, "setup", lambda **kwargs: captured.update(kwargs))
    monkeypatch.chdir(REPO)
    runpy.run_path(str(REPO / "setup.py"))
    return captured["extras_require"]


def test_the_test_extra_has_jax_but_not_torch(monkeypatch):
    extras = _extras(monkeypatch)
    assert "torch" not in extras["test"] and "jax" in extras["test"]
    assert {"jax", "torch"} <= set(extras["backends"])
    for group in ("tfmot", "litert", "datasets", "plots", "search", "hub"):
        assert set(extras[group]) <= set(extras["test"]), group
    assert set(extras["test"]) | set(extras["backends"]) == set(extras["all"])


def test_ci_installs_torch_before_the_test_extra_and_runs_each_backend():
    lines = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if not line.startswith("#")]
    torch = lines.index("pip install torch==2.13.0")
    assert torch < min(i for i, line in enumerate(lines) if '.[test]' in line)
    assert 'pip install -e ".[test]" && python -m pytest' in lines
    for backend in ("jax", "torch"):
        assert f"KERAS_BACKEND={backend} python -m pytest tests/backends tests/internal/test_backend.py" in lines


def test_the_summary_says_which_backend_runs_were_left_out_and_how_to_add_them():
    lines = conftest.backend_runs_note("tensorflow", lambda package: package != "torch")
    assert lines[0].startswith("this run used Keras' tensorflow backend")
    assert lines[1] == ("  jax: skipped here; add it with: "
                        "KERAS_BACKEND=jax python -m pytest tests/backends tests/internal/test_backend.py")
    assert lines[2] == ('  torch: skipped, torch is not installed; add it with: pip install -e ".[backends]" '
                        '&& KERAS_BACKEND=torch python -m pytest tests/backends tests/internal/test_backend.py')
    on_jax = conftest.backend_runs_note("jax", lambda package: True)
    assert [line.split(":")[0].strip() for line in on_jax[1:]] == ["tensorflow", "torch"]
