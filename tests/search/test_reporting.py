"""The search from Python: Optuna's logging off (and restored), `summary()`, the Pareto plot (issue 21)."""

import logging

import numpy as np
import pytest

optuna = pytest.importorskip("optuna")

from deephoyer_tf import search  # noqa: E402
from deephoyer_tf.search import study as study_lib  # noqa: E402
from tests.search.test_study import _run  # noqa: E402
from tests.search.test_study import dense  # noqa: E402, F401 - the module's trained model fixture


class _Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def optuna_messages():
    """Messages Optuna's logger lets through, with its verbosity at INFO before the test."""
    optuna.logging.set_verbosity(optuna.logging.INFO)
    handler = _Records()
    logger = logging.getLogger("optuna")
    logger.addHandler(handler)
    yield handler.messages
    logger.removeHandler(handler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)


def _pruned_at_once():
    return optuna.pruners.ThresholdPruner(lower=2.0)  # every reported error is <= 1: stops after epoch 0


def test_optuna_logging_is_off_during_the_search_and_restored_after(tmp_path, dense, optuna_messages):  # noqa: F811
    lines = []
    result = _run(tmp_path, 1, dense, pruner=_pruned_at_once(), log=lines.append)
    assert optuna_messages == []  # neither "A new study created" nor "Trial 0 pruned"
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
    progress = [line for line in lines if line.startswith("[trial 0] PRUNED")]
    assert len(progress) == 1 and "stopped at epoch 0" in progress[0]
    assert lines[-1] == result.summary()
    assert not (tmp_path / "out" / "backups").exists()  # no empty folder left


@pytest.mark.slow
def test_verbose_0_logs_nothing_and_2_keeps_optunas_lines(tmp_path, dense, optuna_messages):  # noqa: F811
    lines = []
    _run(tmp_path / "quiet", 1, dense, pruner=_pruned_at_once(), log=lines.append, verbose=0)
    assert lines == [] and optuna_messages == []
    _run(tmp_path / "loud", 1, dense, pruner=_pruned_at_once(), log=lines.append, verbose=2)
    assert any("A new study created" in m for m in optuna_messages)
    assert any("Trial 0 pruned" in m for m in optuna_messages)
    assert optuna.logging.get_verbosity() == optuna.logging.INFO
    with pytest.raises(ValueError, match="verbose"):
        _run(tmp_path / "bad", 1, dense, verbose=-1)


def _records():
    def record(number, state, size, accuracy, feasible, total=1000):
        return {"number": number, "state": state, "size": size, "validation_accuracy": accuracy,
                "feasible": feasible, "drop_points": round(100 * (0.95 - accuracy), 6) if accuracy else None,
                "params": {"strength": 1e-4 * (number + 1), "std_ratio": 0.1}, "total_weights": total,
                "dense_macs": 2000, "model_path": f"out/models/trial-{number}.keras"}

    return [record(0, "COMPLETE", 400, 0.945, True), record(1, "COMPLETE", 300, 0.90, False),
            record(2, "PRUNED", None, None, None), record(3, "COMPLETE", 500, 0.944, True),
            record(4, "COMPLETE", 200, 0.60, False)]


def test_summary_lists_the_front_and_the_chosen_trial():
    records = _records()
    front, chosen = study_lib.pareto_front(records), study_lib.choose(records)
    assert front == [4, 1, 0] and chosen["number"] == 0
    result = search.SearchResult(None, records, front, chosen, 0.95, "out", "nonzero_weights", max_drop=0.5,
                                 method="hs", study_name="s")
    text = result.summary()
    lines = text.splitlines()
    assert lines[0] == ("Search hs ('s'): 5 trials (4 complete, 1 pruned); dense validation accuracy "
                        "95.00%, max drop 0.5 points")
    rows = [line.split()[0] for line in lines if line.strip().startswith("#")]
    assert rows == ["#4", "#1", "#0"]  # the front, smallest first; trial 3 is dominated by 0
    row0 = next(line for line in lines if line.strip().startswith("#0"))
    assert row0.split()[1:5] == ["400", "94.50%", "0.50", "yes"]
    assert lines[-1] == ("Chosen: trial 0 (strength=0.0001, std_ratio=0.1): 400 nonzero weights, validation "
                         "94.50% (drop 0.50 points), model out/models/trial-0.keras")
    assert str(result) == text
    none = search.SearchResult(None, records, front, None, 0.95, "out", "nonzero_weights", max_drop=0.5)
    assert none.summary().splitlines()[-1].startswith(
        "Chosen: none; no completed trial is within 0.5 points of the dense validation accuracy (95.00%)")


def test_the_pareto_plot_keeps_both_lines_and_the_dense_size_on_the_axes(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = _records()
    summary = {"trials": records, "pareto": study_lib.pareto_front(records), "chosen": study_lib.choose(records),
               "dense_validation_accuracy": 0.95, "max_drop_points": 0.5, "size_metric": "nonzero_weights",
               "method": "hs", "study_name": "s"}
    fig, ax = plt.subplots()
    study_lib.draw_pareto(ax, summary)
    low, high = ax.get_ylim()
    assert low < 95.0 - 0.5 < 95.0 < high  # the max-drop and dense lines inside the axes
    left, right = ax.get_xlim()
    assert left < 200 and 1000 < right  # every trial and the dense size (1,000 weights)
    assert any(line.get_xdata()[0] == 1000 for line in ax.get_lines())  # the dense size marked
    labels = [t.get_text() for t in ax.texts]
    assert labels == ["trial 0: 400\n94.50%"]  # the chosen point labelled
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "dense size 1,000" in legend and "chosen (trial 0)" in legend
    plt.close(fig)
    study_lib.plot_pareto(summary, tmp_path / "p.png")
    assert (tmp_path / "p.png").read_bytes()[:4] == b"\x89PNG"
    assert np.isfinite(low)
