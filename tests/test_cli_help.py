"""The command line explains itself: quiet start, help with defaults, files listed (issue 21)."""

import argparse
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from deephoyer_tf import cli
from deephoyer_tf._internal import quiet


def _commands(parser, prefix=()):
    """``(words, parser)`` for the top-level parser and every subcommand, nested ones included."""
    yield prefix, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from _commands(child, (*prefix, name))


COMMANDS = [words for words, _ in _commands(cli.build_parser())]


def test_every_command_is_covered():
    assert {" ".join(w) for w in COMMANDS} == {
        "", "reproduce", "search", "report", "export", "evaluate", "plot", "plot histograms",
        "plot descent", "plot pareto"}


@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "top")
def test_every_option_has_help_that_states_its_default(words, capsys):
    parser = dict(_commands(cli.build_parser()))[words]
    for action in parser._actions:
        if not action.option_strings or isinstance(action, argparse._HelpAction):
            continue
        assert action.help, f"{' '.join(words)} {action.option_strings}: no help text"
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*words, "--help"])
    assert exit_info.value.code == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith("usage: deephoyer-tf")
    formatter = parser._get_formatter()
    for action in parser._actions:
        if action.option_strings and not isinstance(action, argparse._HelpAction):
            text = formatter._expand_help(action)  # the text --help prints for the option
            assert "default" in text or "(required)" in text, f"{' '.join(words)} {action.option_strings}: {text!r}"
            assert " ".join(text.split()[:3]) in " ".join(out.split())


def test_recipe_options_show_the_recipes_values(capsys):
    assert cli.main(["reproduce", "lenet-5", "--method", "hs", "--print-recipe", "--strength", "5e-4"]) == 0
    recipe = json.loads(capsys.readouterr().out)
    assert recipe["strength"] == 5e-4 and recipe["pretrain_epochs"] == 12
    assert cli.main(["reproduce", "--model-file", "m.keras", "--method", "hs", "--print-recipe"]) == 0
    assert json.loads(capsys.readouterr().out)["pretrain_epochs"] == 0


@pytest.mark.parametrize("args, message", [
    (["--method", "hs"], "Expected a model: lenet-300-100, lenet-5, or --model-file FILE.keras"),
    (["lenet-5", "--model-file", "m.keras", "--method", "hs"], "Expected either a LeNet or --model-file"),
    (["lenet-5", "--data", "d.npz", "--method", "hs"], "--data FILE.npz goes with --model-file"),
    (["--model-file", "m.keras", "--data", "d.npz", "--dataset", "mnist", "--method", "hs"],
     "Expected either --data or --dataset"),
    (["--model-file", "m.keras", "--method", "magnitude"], "needs the final sparsity"),
    (["--model-file", "absent.keras", "--data", "d.npz", "--method", "hs"], "no such file: absent.keras"),
])
def test_model_arguments_are_checked_before_anything_runs(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert cli.main(["reproduce", *args]) == 2
    assert message in capsys.readouterr().err


def test_search_refuses_tfmot_on_a_user_model(capsys):
    assert cli.main(["search", "--model-file", "m.keras", "--method", "tfmot-magnitude", "--trials", "1"]) == 2
    assert "Invalid value for argument `method`" in capsys.readouterr().err


def test_print_written_lists_existing_files_one_line_each(tmp_path, capsys):
    (tmp_path / "a.json").write_text("x" * 1500)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.keras").write_bytes(b"y" * 20)
    cli.print_written([(tmp_path / "a.json", "what a holds"), (tmp_path / "absent", "never"),
                       (tmp_path / "models", "the models")])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "files written:"
    assert lines[1].split() == [str(tmp_path / "a.json"), "1.5", "KB", "what", "a", "holds"]
    assert lines[2].split() == [str(tmp_path / "models"), "20", "B", "the", "models"]
    assert len(lines) == 3


# --- the quiet start -------------------------------------------------------

def test_the_command_line_process_is_recognized():
    assert quiet.is_command_line(["/venv/bin/deephoyer-tf", "--help"], [])
    assert quiet.is_command_line(["-m"], ["python", "-m", "deephoyer_tf.cli", "--help"])
    assert not quiet.is_command_line(["-m"], ["python", "-m", "pytest"])
    assert not quiet.is_command_line(["script.py"], ["python", "script.py"])


def test_verbose_by_flag_or_by_a_low_log_level():
    assert not quiet.wants_verbose(["reproduce", "--help"], {})
    assert quiet.wants_verbose(["reproduce", "--verbose"], {})
    assert quiet.wants_verbose(["-v", "report"], {})
    assert quiet.wants_verbose([], {"TF_CPP_MIN_LOG_LEVEL": "0"})
    assert not quiet.wants_verbose([], {"TF_CPP_MIN_LOG_LEVEL": "2"})


def test_captured_stderr_hides_c_level_writes_and_gives_them_back_on_failure(capfd):
    with quiet.captured_stderr():
        os.write(2, b"noise from C++\n")
    assert capfd.readouterr().err == ""
    with pytest.raises(ImportError), quiet.captured_stderr():
        os.write(2, b"why it failed\n")
        raise ImportError("broken")
    assert capfd.readouterr().err == "why it failed\n"


def _env(**changes):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    env.update(changes)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("words", COMMANDS, ids=lambda w: " ".join(w) or "top")
def test_help_prints_nothing_on_stderr_in_a_fresh_process(words):
    result = subprocess.run([sys.executable, "-m", "deephoyer_tf.cli", *words, "--help"],
                            capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.startswith("usage: deephoyer-tf")


@pytest.mark.slow
def test_verbose_shows_tensorflows_logs_again():
    result = subprocess.run([sys.executable, "-m", "deephoyer_tf.cli", "--verbose", "--help"],
                            capture_output=True, text=True, timeout=300, env=_env())
    assert result.returncode == 0 and result.stderr != ""


# --- a user's model through reproduce and search ------------------------------

@pytest.fixture(scope="module")
def user_files(tmp_path_factory):
    import keras

    from tests.paper.test_user_model import blobs
    from tests.paper.test_user_model import build
    from tests.paper.test_user_model import save_arrays

    folder = tmp_path_factory.mktemp("user")
    keras.utils.set_random_seed(0)
    model = build()
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(*blobs(256, 0), epochs=20, verbose=0)
    model.save(folder / "dense.keras")
    return folder / "dense.keras", save_arrays(folder / "d.npz")


def _cli(*args):
    result = subprocess.run([sys.executable, "-m", "deephoyer_tf.cli", *args], capture_output=True, text=True,
                            timeout=600, env=_env(DEEPHOYER_CACHE_DIR=os.devnull))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def _listed(stdout):
    lines = stdout.splitlines()
    start = lines.index("files written:")
    return [line.split()[0] for line in lines[start + 1:]]


@pytest.mark.slow
def test_reproduce_on_a_model_file_and_npz_lists_the_files_it_wrote(user_files, tmp_path):
    from deephoyer_tf import load_model

    model_file, data = user_files
    out = tmp_path / "out"
    result = _cli("reproduce", "--model-file", str(model_file), "--data", str(data), "--method", "hs",
                  "--quick", "--plots", "--output", str(out))
    names = ["model.keras", "results.json", "stages.npz", "histograms.png"]
    assert _listed(result.stdout) == [str(out / n) for n in names]
    assert sorted(p.name for p in out.iterdir()) == sorted(names)
    results = json.loads((out / "results.json").read_text())
    assert results["model"] == "dense" and results["dataset"] == "d.npz"
    with np.load(data) as arrays:
        logits = load_model(out / "model.keras").predict(arrays["x_test"], verbose=0)
        assert results["test_accuracy"] == pytest.approx(np.mean(np.argmax(logits, -1) == arrays["y_test"]))
    assert result.stderr == ""


@pytest.mark.slow
def test_search_on_a_model_file_prints_its_summary_and_lists_the_files(user_files, tmp_path):
    model_file, data = user_files
    out = tmp_path / "out"
    result = _cli("search", "--model-file", str(model_file), "--data", str(data), "--method", "hs",
                  "--trials", "2", "--quick", "--output", str(out))
    summary = json.loads((out / "search.json").read_text())
    assert summary["study_name"] == "dense-hs" and summary["n_trials"] == 2
    assert "Pareto front (nonzero weights / validation accuracy):" in result.stdout
    assert ("Chosen: trial" in result.stdout) == (summary["chosen"] is not None)
    listed = _listed(result.stdout)
    assert listed[:3] == [str(out / "search.json"), str(out / "pareto.png"), str(out / "study.db")]
    models = sorted(p.name for p in (out / "models").iterdir())
    assert listed[3:] == ([str(out / "models")] if models else [])
    assert sorted(p.name for p in out.iterdir()) == sorted(["search.json", "pareto.png", "study.db"]
                                                          + (["models"] if models else []))  # no backups/
    assert "A new study created" not in result.stderr and result.stderr == ""
