"""Every recipe and command-line value is checked before any data is read or any epoch trained.

Before: ``--regularize-epochs -1``, ``--learning-rate -1`` and ``--tolerance -1``
ran to exit 0; ``--batch-size 0`` gave ZeroDivisionError; ``--std-ratio -1`` failed
after the regularized stage; a malformed ``--match`` gave KeyError; in ``search``,
``--regularize-epochs 0`` silently became the recipe's default.
"""

import dataclasses
import json

import pytest

from deephoyer_tf import cli
from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import recipe_checks
from deephoyer_tf.paper import reproduce

REPRODUCE = ["reproduce", "lenet-300-100", "--method", "hs"]


def _value(name, expected, received):
    return f"Invalid value for argument `{name}`. Expected {expected}. Received: {name}={received}"


@pytest.fixture
def no_work(monkeypatch, tmp_path):
    """Reading the data (the first step of any run or search) fails the test."""

    def load_dataset(*args, **kwargs):
        raise AssertionError("the data were read: the run started before the arguments were checked")

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    monkeypatch.setenv("DEEPHOYER_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path


def _cli_error(argv, capsys, out):
    assert cli.main([*argv, "--output", str(out)]) == 2
    assert not out.exists()  # nothing written
    return capsys.readouterr().err.strip()


@pytest.mark.parametrize("argv, message", [
    (["--regularize-epochs", "-1"], _value("regularize_epochs", "an int >= 0", "-1")),
    (["--finetune-epochs", "-1"], _value("finetune_epochs", "an int >= 0", "-1")),
    (["--warmup-epochs", "-2"], _value("warmup_epochs", "an int >= 0", "-2")),
    (["--pretrain-epochs", "-1"], _value("pretrain_epochs", "an int >= 1", "-1")),
    (["--pretrain-epochs", "0"], _value("pretrain_epochs", "an int >= 1", "0")),
    (["--learning-rate", "-1"], _value("learning_rate", "a finite float > 0", "-1.0")),
    (["--learning-rate", "0"], _value("learning_rate", "a finite float > 0", "0.0")),
    (["--finetune-learning-rate", "0"], _value("finetune_learning_rate", "a finite float > 0", "0.0")),
    (["--batch-size", "0"], _value("batch_size", "an int >= 1", "0")),
    (["--tolerance", "-1"], _value("tolerance", "a finite float >= 0", "-1.0")),
    (["--std-ratio", "-1"], _value("std_ratio", "a finite float >= 0", "-1.0")),
    (["--strength", "nan"], _value("strength", "a finite float >= 0", "nan")),
    (["--seed", "-1"], _value("seed", "an int >= 0", "-1")),
    (["--target-sparsity", "0.9"], "Invalid value for argument `target_sparsity`. Expected None for method "
     "'hs' (only 'magnitude' prunes to a target sparsity; this method's threshold is a std ratio). "
     "Received: target_sparsity=0.9"),
])
def test_each_reproduce_argument_is_rejected_before_any_work(argv, message, no_work, capsys):
    assert _cli_error([*REPRODUCE, *argv], capsys, no_work / "out") == f"deephoyer-tf reproduce: error: {message}"


@pytest.mark.parametrize("argv, message", [
    (["--target-sparsity", "1.5"], _value("target_sparsity", "a finite float in [0, 1)", "1.5")),
    (["--target-sparsity", "1"], _value("target_sparsity", "a finite float in [0, 1)", "1.0")),
    (["--target-sparsity", "-0.1"], _value("target_sparsity", "a finite float in [0, 1)", "-0.1")),
    (["--std-ratio", "0.5"], "Invalid value for argument `std_ratio`. Expected None for method 'magnitude' "
     "(TFMOT prunes to a target sparsity; use target_sparsity). Received: std_ratio=0.5"),
])
def test_magnitude_arguments_are_rejected_before_any_work(argv, message, no_work, capsys):
    argv = ["reproduce", "lenet-300-100", "--method", "magnitude", *argv]
    assert _cli_error(argv, capsys, no_work / "out") == f"deephoyer-tf reproduce: error: {message}"


@pytest.mark.parametrize("content, message", [
    ("{}", "Expected a results.json with the field 'nonzero_weights'. Received: 'M' has fields []"),
    ('{"nonzero_weights": 10}', "Expected a results.json with the field 'total_weights'. "
     "Received: 'M' has fields ['nonzero_weights']"),
    ('{"nonzero_weights": "10", "total_weights": 100}', "Expected an integer nonzero_weights. "
     "Received: nonzero_weights='10' in 'M'"),
    ('{"nonzero_weights": 200, "total_weights": 100}', "Expected 0 < nonzero_weights <= total_weights. "
     "Received: nonzero_weights=200, total_weights=100 in 'M'"),
    ('{"nonzero_weights": 0, "total_weights": 100}', "Expected 0 < nonzero_weights <= total_weights. "
     "Received: nonzero_weights=0, total_weights=100 in 'M'"),
    ("[1, 2]", "Expected a JSON object with nonzero_weights and total_weights. Received: list in 'M'"),
    ('{"nonzero', "Expected a results.json of a reproduce run (JSON). Received: match='M', unreadable: "
     "JSONDecodeError: Unterminated string starting at: line 1 column 2 (char 1)"),
])
def test_a_malformed_match_file_is_rejected_before_any_work(content, message, no_work, capsys):
    match = no_work / "results.json"
    match.write_text(content)
    argv = ["reproduce", "lenet-300-100", "--method", "magnitude", "--match", str(match)]
    expected = "deephoyer-tf reproduce: error: Invalid value for argument `match`. " + message.replace(
        "'M'", repr(str(match)))
    assert _cli_error(argv, capsys, no_work / "out") == expected


def test_match_and_target_sparsity_together_are_rejected(no_work, capsys):
    match = no_work / "results.json"
    match.write_text('{"nonzero_weights": 10, "total_weights": 100}')
    argv = ["reproduce", "lenet-300-100", "--method", "magnitude", "--match", str(match),
            "--target-sparsity", "0.5"]
    assert "Expected either --match or --target-sparsity, not both" in _cli_error(argv, capsys, no_work / "out")
    assert recipe_checks.target_sparsity_from_results(match) == pytest.approx(0.9)


def test_run_checks_a_recipe_given_directly_before_any_work(no_work):
    bad = dataclasses.replace(reproduce.recipe_for("lenet-300-100", "hs"), batch_size=0)
    with pytest.raises(ValueError, match=r"^Invalid value for argument `batch_size`\. Expected an int >= 1\. "
                                         r"Received: batch_size=0$"):
        reproduce.run("lenet-300-100", "hs", output=no_work / "out", recipe=bad)
    assert not (no_work / "out").exists()


@pytest.mark.parametrize("override, error, message", [
    (dict(std_ratios=()), ValueError, r"Expected at least one std ratio\. Received: std_ratios=\(\)$"),
    (dict(std_ratios=(0.1, -0.2)), ValueError, r"`std_ratios`\. Expected a finite float >= 0\. "
     r"Received: std_ratios\[1\]=-0\.2$"),
    (dict(regularize_epochs=2.5), TypeError, r"^Invalid type for argument `regularize_epochs`\. Expected an int\."),
    (dict(train_subset=0), ValueError, r"Expected None or an int >= 1\. Received: train_subset=0$"),
    (dict(select_finetune_epochs=-1), ValueError, r"`select_finetune_epochs`\. Expected an int >= 0\."),
])
def test_recipe_for_checks_every_field(override, error, message):
    with pytest.raises(error, match=message):
        reproduce.recipe_for("lenet-5", "group-hs", **override)


SEARCH = ["search", "lenet-300-100", "--method", "hs", "--trials", "1"]


@pytest.mark.parametrize("argv, message", [
    (["--regularize-epochs", "0"], _value("regularize_epochs", "an int >= 1", "0")),
    (["--finetune-epochs", "-1"], _value("finetune_epochs", "an int >= 0", "-1")),
    (["--max-drop", "-1"], _value("max_drop", "a finite float >= 0", "-1.0")),
    (["--trials", "0"], _value("n_trials", "an int >= 1", "0")),
    (["--seed", "-3"], _value("seed", "an int >= 0", "-3")),
    (["--storage", "bogus://"], "Invalid value for argument `storage`. Expected a SQLAlchemy database URL "
     "such as sqlite:///search.db or postgresql://user@host/db. Received: storage='bogus://' "
     "(NoSuchModuleError: Can't load plugin: sqlalchemy.dialects:bogus)"),
])
def test_each_search_argument_is_rejected_before_any_work(argv, message, no_work, capsys):
    pytest.importorskip("optuna")
    assert _cli_error([*SEARCH, *argv], capsys, no_work / "out") == f"deephoyer-tf search: error: {message}"


def test_search_regularize_epochs_zero_is_not_the_default(no_work):
    from deephoyer_tf.search import mnist

    with pytest.raises(ValueError, match=r"`regularize_epochs`\. Expected an int >= 1\. Received: regularize_epochs=0"):
        mnist.lenet("lenet-300-100", "hs", n_trials=1, output=no_work / "out", regularize_epochs=0)
    _, schedule = mnist.check_arguments("lenet-300-100", "hs", n_trials=1, finetune_epochs=0, warmup_epochs=0)
    assert (schedule.finetune_epochs, schedule.warmup_epochs) == (0, 0)


# --- the run identity, stage by stage ------------------------------------------------------------


def _identity(**recipe_changes):
    recipe = dataclasses.replace(reproduce.recipe_for("lenet-300-100", "hs", std_ratio=0.5), **recipe_changes)
    return {"model": "lenet-300-100", "method": "hs", "dataset": "mnist", "dense": "abc",
            "recipe": dataclasses.asdict(recipe)}


def _finished_stages(folder, identity):
    folder = reproduce._checkpoints(folder, identity, lambda *a: None)
    (folder / "regularized.npz").write_bytes(b"r")
    (folder / "std_ratio.json").write_text('{"std_ratio": 0.5}')
    (folder / "finetune.backup").mkdir()
    (folder / "finetuned.npz").write_bytes(b"f")
    return folder


@pytest.mark.parametrize("change, kept", [
    (dict(), {"regularized.npz", "std_ratio.json", "finetune.backup", "finetuned.npz"}),
    (dict(std_ratio=0.3), {"regularized.npz", "std_ratio.json"}),
    (dict(finetune_epochs=3), {"regularized.npz", "std_ratio.json"}),
    (dict(finetune_learning_rate=1e-4), {"regularized.npz"}),  # the selection fine-tunes too
    (dict(tolerance=0.01), {"regularized.npz"}),
    (dict(strength=1e-3), set()),
    (dict(regularize_epochs=7), set()),
])
def test_a_changed_later_stage_argument_keeps_the_finished_stages(tmp_path, change, kept):
    """Before: any recipe change (even the std ratio) discarded every finished stage."""
    folder = _finished_stages(tmp_path / "ck", _identity())
    logs = []
    reproduce._checkpoints(folder, _identity(**change), logs.append)
    assert {p.name for p in folder.iterdir()} - {"run.json"} == kept
    if change:
        assert logs and all(name in logs[0] for name in change), logs
        assert ("keeping the finished stage" in logs[0]) == bool(kept)
        assert logs[0].endswith("redoing the rest" if kept else "starting afresh")
    else:
        assert logs == []


def test_an_unreadable_run_stamp_starts_afresh(tmp_path):
    folder = _finished_stages(tmp_path / "ck", _identity())
    (folder / "run.json").write_text('{"regul')
    logs = []
    reproduce._checkpoints(folder, _identity(), logs.append)
    assert {p.name for p in folder.iterdir()} == {"run.json"}
    assert "run.json is unreadable (JSONDecodeError" in logs[0] and logs[0].endswith("starting afresh")
    assert json.loads((folder / "run.json").read_text()).keys() == {"regularize", "select", "finetune"}
