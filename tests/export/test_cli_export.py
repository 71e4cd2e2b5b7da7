"""The ``export`` command, run in-process: what it prints, writes and refuses."""

import numpy as np
import pytest

from deephoyer_tf import cli


@pytest.fixture(scope="module")
def cnn_file(tmp_path_factory):
    """A small CNN saved as .keras, with 4 of its 8 first filters dead."""
    import keras

    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((12, 12, 1)),
        keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
        keras.layers.Flatten(),
        keras.layers.Dense(10, name="fc"),
    ])
    w, b = model.get_layer("conv").get_weights()
    w[..., :4], b[:4] = 0, 0
    model.get_layer("conv").set_weights([w, b])
    path = tmp_path_factory.mktemp("cli") / "cnn.keras"
    model.save(path)
    return path, model


def test_export_shrink_prints_the_cut_and_the_files(cnn_file, tmp_path, capsys):
    path, model = cnn_file
    out = tmp_path / "small.tflite"
    assert cli.main(["export", str(path), str(out), "--shrink", "--quiet"]) == 0
    stdout = capsys.readouterr().out
    params = model.count_params()
    # conv: 4 of 8 filters (10 parameters each); fc: 4 of 8 channels x 100 positions x 10.
    small = params - 4 * 10 - 4 * 100 * 10
    macs = 8 * 9 * 100 + 800 * 10
    assert f"shrink: parameters {params:,} -> {small:,}" in stdout
    assert f"MACs per example {macs:,} -> {macs // 2:,} (2.00x fewer)" in stdout
    assert "check: max abs error" in stdout and "storage: " in stdout
    assert f"wrote:\n  {out}: {out.stat().st_size:,} bytes" in stdout


def test_export_int8_reports_agreement_and_accuracy(cnn_file, tmp_path, capsys):
    path, model = cnn_file
    # 300 samples: the check takes the first 256, and the first 256 labels.
    x = np.random.default_rng(0).standard_normal((300, 12, 12, 1)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", np.asarray(model(x)).argmax(-1))
    out = tmp_path / "q.tflite"
    code = cli.main(["export", str(path), str(out), "--quantize", "int8", "--quiet",
                     "--representative-data", str(tmp_path / "x.npy"),
                     "--labels", str(tmp_path / "y.npy"), "--min-agreement", "0.5"])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "top-1 agreement" in stdout and "accuracy" in stdout and "on 256 samples" in stdout
    assert "dense (" in stdout  # unstructured zeros: dense int8


def test_rejected_export_fails_clearly_and_writes_nothing(cnn_file, tmp_path, capsys):
    path, _ = cnn_file
    out = tmp_path / "r.tflite"
    code = cli.main(["export", str(path), str(out), "--quantize", "dynamic", "--atol", "0",
                     "--rtol", "0", "--quiet"])
    err = capsys.readouterr().err
    assert code == 1
    assert err.startswith("deephoyer-tf export: TFLite check failed") and "Traceback" not in err
    assert "the file was not written" in err
    assert not out.exists() and list(tmp_path.iterdir()) == []
    code = cli.main(["export", str(path), str(out), "--min-agreement", "3", "--quiet"])
    assert code == 2 and "argument `min_agreement`" in capsys.readouterr().err
    code = cli.main(["export", str(path), str(out), "--quantize", "int8",
                     "--representative-data", str(tmp_path / "none.npy")])
    assert code == 2
    assert "--representative-data: no such file" in capsys.readouterr().err


def test_export_options_have_help_and_defaults(capsys):
    with pytest.raises(SystemExit):
        cli.main(["export", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for option in ("--sparse", "--atol", "--rtol", "--min-agreement", "--labels", "--shrink"):
        assert option in text
    assert "(default: auto)" in text and "(default: 0.99)" in text
