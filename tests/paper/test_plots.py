"""plots: every figure is a readable PNG of the expected layout; load_stages
round-trips save_stages; the Hoyer-Square descent follows eq. 4; the command
line. (``reproduce --quick --plots`` end to end: tests/test_cli.py.)"""

import ast
import json
import pathlib
import sys

import matplotlib.image
import numpy as np
import pytest

from deephoyer_tf import cli
from deephoyer_tf.paper import plots
from deephoyer_tf.paper import reproduce

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DPI = 110


def read_png(path):
    """(height, width) of a valid PNG file."""
    with open(path, "rb") as f:
        assert f.read(8) == PNG_SIGNATURE
    image = matplotlib.image.imread(path)
    assert image.ndim == 3 and image.shape[0] > 0 and image.shape[1] > 0
    assert image.std() > 0  # something was drawn
    return image.shape[:2]


def make_stages(seed=0):
    rng = np.random.default_rng(seed)
    dense = {"fc1": rng.normal(0, 0.1, (20, 10)), "fc2": rng.normal(0, 0.1, (10, 3))}
    regularized = {k: v * (rng.random(v.shape) < 0.5) + 1e-4 for k, v in dense.items()}
    final = {k: np.where(np.abs(v) > 0.05, v, 0.0) for k, v in regularized.items()}
    return {"dense": dense, "regularized": regularized, "final": final}


def write_results(folder, **fields):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(fields))
    return folder / "results.json"


# --- histograms -------------------------------------------------------------


@pytest.mark.parametrize("shared_bins", [False, True])
def test_weight_histograms_one_row_per_layer_one_column_per_stage(tmp_path, shared_bins):
    stages = make_stages()
    # Given out of order, with a stage lacking a layer: columns in pipeline order.
    stages = {"final": stages["final"], "dense": stages["dense"],
              "regularized": {"fc1": stages["regularized"]["fc1"]}}
    path = plots.weight_histograms(stages, tmp_path / "sub" / "h.png", title="t",
                                   shared_bins=shared_bins)
    assert path == str(tmp_path / "sub" / "h.png")
    assert read_png(path) == (round((2.3 * 2 + 0.4) * DPI), round(3.3 * 3 * DPI))


def test_weight_histograms_all_zero_kernel(tmp_path):
    stages = {"final": {"fc1": np.zeros((4, 3))}}
    assert read_png(plots.weight_histograms(stages, tmp_path / "z.png", log=False))


@pytest.mark.parametrize("stages", [{}, {"dense": {}}, [("dense", {})], {"dense": np.ones(3)}])
def test_weight_histograms_bad_stages(stages, tmp_path):
    with pytest.raises(ValueError, match=r"Invalid value for argument `stages`\. Expected a non-empty dict"):
        plots.weight_histograms(stages, tmp_path / "x.png")


def test_load_stages_round_trips_save_stages(tmp_path):
    stages = make_stages()
    stages["final"]["block/fc"] = np.arange(6.0).reshape(2, 3)  # nested layer names
    reproduce.save_stages(tmp_path / "stages.npz", {s: stages[s] for s in ("final", "dense", "regularized")})
    for source in (tmp_path, tmp_path / "stages.npz"):
        loaded = plots.load_stages(source)
        assert list(loaded) == ["dense", "regularized", "final"]
        for stage, kernels in stages.items():
            assert sorted(loaded[stage]) == sorted(kernels)
            for name, kernel in kernels.items():
                np.testing.assert_array_equal(loaded[stage][name], kernel)


def test_load_stages_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"No stages file at '.*stages\.npz'"):
        plots.load_stages(tmp_path)
    np.savez(tmp_path / "bad.npz", fc1=np.ones(2))
    with pytest.raises(ValueError, match=r"Invalid array name 'fc1' in '.*bad\.npz'\. Expected \"stage/layer\""):
        plots.load_stages(tmp_path / "bad.npz")


@pytest.mark.slow
def test_reproduction_histograms_writes_into_the_output_folder(tmp_path):
    reproduce.save_stages(tmp_path / "stages.npz", make_stages())
    results = {"model": "lenet-300-100", "method": "hs", "test_accuracy": 0.98,
               "nonzero_weights": 10, "total_weights": 230}
    path = plots.reproduction_histograms(tmp_path, results)
    assert path == str(tmp_path / "histograms.png")
    assert read_png(path) == (round((2.3 * 2 + 0.4) * DPI), round(3.3 * 3 * DPI))


# --- descent path -----------------------------------------------------------


def test_descent_first_step_is_the_eq4_gradient_step():
    run = plots.hoyer_square_descent(dim=20, seed=3, steps=1, learning_rate=1e-2)
    w = run["weights"][0]
    l1, l2sq = np.abs(w).sum(), np.square(w).sum()
    np.testing.assert_allclose(w, np.random.default_rng(3).normal(size=20).astype(np.float32))
    # Eq. 4: dH_S/dw_i = 2 sign(w_i) ||w||_1 / ||w||_2^4 * (||w||_2^2 - |w_i| ||w||_1).
    gradient = 2 * np.sign(w) * l1 / l2sq**2 * (l2sq - np.abs(w) * l1)
    np.testing.assert_allclose(run["weights"][1], w - 1e-2 * gradient, rtol=1e-5, atol=1e-7)
    assert run["hoyer_square"][0] == pytest.approx(l1**2 / l2sq)
    assert run["threshold"][0] == pytest.approx(l2sq / l1)


def test_descent_shrinks_inside_the_threshold_and_ends_one_sparse():
    run = plots.hoyer_square_descent()
    w, threshold = run["weights"], run["threshold"][:, None]
    before, after = np.abs(w[:-1]), np.abs(w[1:])
    same_sign = np.sign(w[:-1]) == np.sign(w[1:])
    clear = np.abs(before - threshold[:-1]) > 1e-3  # away from the threshold itself
    checked = same_sign & clear & (before > 0)  # an exact 0 has gradient 0 and stays
    inside = before < threshold[:-1]
    assert (checked & inside).sum() > 1000 and (checked & ~inside).sum() > 1000
    assert np.all((after < before)[checked & inside])
    assert np.all((after > before)[checked & ~inside])
    # Hoyer-Square never exceeds the number of nonzero elements (Cauchy-Schwarz).
    assert np.all(run["hoyer_square"] <= np.count_nonzero(w, axis=1) + 1e-6)
    assert run["l0"][0] == 20 and run["l0"][-1] == 1
    assert run["hoyer_square"][-1] < 1.05
    assert np.argmax(np.abs(w[-1])) == np.argmax(np.abs(w[0]))  # the largest survives


def test_descent_path_png(tmp_path):
    assert read_png(plots.descent_path(tmp_path / "d.png", steps=200)) == (4 * DPI, 11 * DPI)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        ({"dim": 1}, ValueError, r"Invalid value for argument `dim`\. Expected an int >= 2\. Received: dim=1"),
        ({"steps": 2.0}, TypeError, r"Invalid type for argument `steps`\. Expected an int\. Received: steps=2\.0 of type float"),
        ({"learning_rate": 0}, ValueError, r"argument `learning_rate`\. Expected a float > 0\. Received: learning_rate=0"),
        ({"tolerance": "x"}, TypeError, r"Invalid type for argument `tolerance`\. Expected a float\. Received: tolerance='x' of type str"),
    ],
)
def test_descent_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        plots.hoyer_square_descent(**kwargs)


# --- pareto -----------------------------------------------------------------


@pytest.fixture
def runs(tmp_path):
    common = {"dense_test_accuracy": 0.981, "total_weights": 266200, "dense_macs": 266200}
    return [
        write_results(tmp_path / "a", model="lenet-300-100", method="hs", test_accuracy=0.982,
                      nonzero_weights=6800, macs=30000,
                      paper={"test_accuracy": 0.984, "nonzero_weights": 6200}, **common),
        write_results(tmp_path / "b", model="lenet-300-100", method="hs", test_accuracy=0.978,
                      nonzero_weights=4000, macs=20000, **common),
        write_results(tmp_path / "c", model="lenet-300-100", method="magnitude",
                      test_accuracy=0.975, nonzero_weights=6200, macs=60000, **common),
        write_results(tmp_path / "d", model="lenet-5", method="group-hs", test_accuracy=0.99,
                      nonzero_weights=5000, macs=170000),
    ]


@pytest.mark.parametrize("metric", ["nonzero_weights", "macs"])
def test_pareto_one_panel_per_model(runs, tmp_path, metric):
    path = plots.pareto(runs, tmp_path / "p.png", metric=metric)
    assert read_png(path) == (round(4.4 * DPI), round(6.2 * 2 * DPI))
    # Run folders are accepted too.
    one_model = plots.pareto([p.parent for p in runs[:3]], tmp_path / "q.png", metric=metric)
    assert read_png(one_model) == (round(4.4 * DPI), round(6.2 * DPI))


def test_pareto_errors(runs, tmp_path):
    with pytest.raises(ValueError, match=r"Invalid value for argument `metric`\. Expected one of "
                       r"\['nonzero_weights', 'macs'\]\. Received: metric='flops'"):
        plots.pareto(runs, tmp_path / "p.png", metric="flops")
    with pytest.raises(ValueError, match=r"Expected a non-empty list of results\.json paths\. Received: results_paths=\[\]"):
        plots.pareto([], tmp_path / "p.png")
    bad = write_results(tmp_path / "bad", model="lenet-5", method="hs", nonzero_weights=1)
    with pytest.raises(ValueError, match=r"bad/results\.json' lacks the field\(s\) \['test_accuracy'\]"):
        plots.pareto([runs[0], bad], tmp_path / "p.png")


# --- command line -----------------------------------------------------------


@pytest.mark.slow
def test_plot_command_line(runs, tmp_path, capsys):
    (tmp_path / "run").mkdir()
    reproduce.save_stages(tmp_path / "run" / "stages.npz", make_stages())
    assert cli.main(["plot", "histograms", str(tmp_path / "run")]) == 0
    read_png(tmp_path / "run" / "histograms.png")
    out = tmp_path / "custom.png"
    assert cli.main(["plot", "histograms", str(tmp_path / "run" / "stages.npz"), "--out", str(out)]) == 0
    read_png(out)
    assert cli.main(["plot", "descent", "--out", str(tmp_path / "d.png"), "--steps", "50",
                     "--dim", "8", "--seed", "1", "--learning-rate", "0.01"]) == 0
    read_png(tmp_path / "d.png")
    assert cli.main(["plot", "pareto", *map(str, runs), "--metric", "macs",
                     "--out", str(tmp_path / "p.png")]) == 0
    read_png(tmp_path / "p.png")
    listed = capsys.readouterr().out.splitlines()[-2:]
    assert listed[0] == "files written:"
    assert listed[1].split()[0] == str(tmp_path / "p.png") and listed[1].endswith("test accuracy against macs")
    with pytest.raises(SystemExit):
        cli.main(["plot"])  # a figure must be named


def test_matplotlib_only_when_drawing(monkeypatch, tmp_path):
    # TensorFlow itself may import matplotlib, so the check is on deephoyer_tf's
    # modules: none imports it at module level...
    package = pathlib.Path(plots.__file__).parent
    for source in package.glob("*.py"):
        for node in ast.parse(source.read_text()).body:
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + [getattr(node, "module", None) or ""]
                assert not any(n.split(".")[0] == "matplotlib" for n in names), source.name
    # ...and drawing without it says what to install.
    for name in [n for n in sys.modules if n.split(".")[0] == "matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)
    with pytest.raises(ImportError, match=r'needs matplotlib: pip install "deephoyer_tf\[plots\]"'):
        plots.descent_path(tmp_path / "d.png", steps=1)
