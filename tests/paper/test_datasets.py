"""Tests for deephoyer_tf.datasets: IDX parsing, MNIST splits, normalization, errors."""

import gzip
import hashlib
import pathlib
import re

import numpy as np
import pytest

from deephoyer_tf.paper import datasets


def _idx_bytes(array, type_code=0x08, ndim=None):
    ndim = array.ndim if ndim is None else ndim
    header = bytes([0, 0, type_code, ndim]) + b"".join(
        int(d).to_bytes(4, "big") for d in array.shape
    )
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def _write(path, payload, compress=True):
    path = pathlib.Path(path)
    if compress:
        with gzip.open(path, "wb") as f:
            f.write(payload)
    else:
        path.write_bytes(payload)
    return path


def _synthetic_folder(folder, n_train=12, n_test=4, seed=0):
    """A tiny MNIST-shaped folder; returns the raw arrays."""
    rng = np.random.default_rng(seed)
    raw = {
        "train_images": rng.integers(0, 256, (n_train, 28, 28), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, 28, 28), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, array in raw.items():
        _write(folder / datasets.FILES[key], _idx_bytes(array))
    return raw


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return datasets.load_mnist(mnist_dir)


@pytest.fixture(scope="module")
def raw_train(mnist_dir):
    folder = pathlib.Path(mnist_dir)
    return (
        datasets.read_idx(folder / datasets.FILES["train_images"]),
        datasets.read_idx(folder / datasets.FILES["train_labels"]),
    )


# ---------------------------------------------------------------- real MNIST


def test_read_idx_is_lossless_against_sha256sums(mnist_dir):
    """Re-encoding each parsed array gives the bytes whose SHA-256 is published."""
    folder = pathlib.Path(mnist_dir)
    sums = dict(
        reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines()
    )
    assert sorted(sums) == sorted(name[: -len(".gz")] for name in datasets.FILES.values())
    for name in datasets.FILES.values():
        array = datasets.read_idx(folder / name)
        digest = hashlib.sha256(_idx_bytes(array)).hexdigest()
        assert digest == sums[name[: -len(".gz")]], name


def test_shapes_dtypes_and_labels(mnist):
    assert mnist.x_train.shape == (55000, 28, 28, 1)
    assert mnist.x_val.shape == (5000, 28, 28, 1)
    assert mnist.x_test.shape == (10000, 28, 28, 1)
    assert (len(mnist.y_train), len(mnist.y_val), len(mnist.y_test)) == (55000, 5000, 10000)
    for x in (mnist.x_train, mnist.x_val, mnist.x_test):
        assert x.dtype == np.float32
    for y in (mnist.y_train, mnist.y_val, mnist.y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))


def test_normalization_uses_training_part_statistics(mnist, raw_train):
    images, _ = raw_train
    train = images[:55000].astype(np.float64)
    assert mnist.mean == pytest.approx(train.mean(), rel=1e-12)
    assert mnist.std == pytest.approx(train.std(), rel=1e-12)
    assert abs(float(mnist.x_train.mean(dtype=np.float64))) < 1e-5
    assert float(mnist.x_train.std(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    expected = (images[:3].astype(np.float64) - train.mean()) / train.std()
    np.testing.assert_allclose(mnist.x_train[:3, ..., 0], expected, atol=1e-5)


def test_validation_is_last_5000_training_images(mnist, raw_train):
    images, labels = raw_train
    np.testing.assert_array_equal(mnist.y_val, labels[-5000:])
    np.testing.assert_array_equal(mnist.y_train, labels[:-5000])
    back = np.rint(mnist.x_val[..., 0].astype(np.float64) * mnist.std + mnist.mean)
    np.testing.assert_array_equal(back, images[-5000:])


def test_dataset_batches(mnist):
    data = mnist.dataset("val", batch_size=1000)
    batches = list(data.as_numpy_iterator())
    assert len(batches) == 5
    x, y = batches[-1]
    assert x.shape == (1000, 28, 28, 1) and y.shape == (1000,)
    np.testing.assert_array_equal(y, mnist.y_val[-1000:])
    shuffled = mnist.dataset("val", batch_size=5000, shuffle=True, seed=1)
    (x, y), = list(shuffled.as_numpy_iterator())
    assert not np.array_equal(y, mnist.y_val)
    np.testing.assert_array_equal(np.sort(y), np.sort(mnist.y_val))


def test_dataset_bad_arguments(mnist):
    with pytest.raises(ValueError, match=re.escape("Received: split='validation'")):
        mnist.dataset("validation")
    with pytest.raises(ValueError, match="Received: batch_size=0"):
        mnist.dataset("train", batch_size=0)


# ---------------------------------------------------------------- synthetic IDX


def test_synthetic_folder_and_validation_size(tmp_path):
    raw = _synthetic_folder(tmp_path)
    data = datasets.load_mnist(tmp_path, validation_size=5)
    train = raw["train_images"][:7].astype(np.float64)
    assert (data.mean, data.std) == (pytest.approx(train.mean()), pytest.approx(train.std()))
    np.testing.assert_array_equal(data.y_val, raw["train_labels"][7:])
    np.testing.assert_allclose(
        data.x_test[..., 0], (raw["test_images"] - train.mean()) / train.std(), atol=1e-5
    )
    empty = datasets.load_mnist(tmp_path, validation_size=0)
    assert empty.x_val.shape == (0, 28, 28, 1) and empty.x_train.shape == (12, 28, 28, 1)


def test_uncompressed_files_accepted(tmp_path):
    raw = _synthetic_folder(tmp_path)
    name = datasets.FILES["test_labels"]
    (tmp_path / name).unlink()
    _write(tmp_path / name[: -len(".gz")], _idx_bytes(raw["test_labels"]), compress=False)
    np.testing.assert_array_equal(datasets.load_mnist(tmp_path, 2).y_test, raw["test_labels"])


def test_environment_variable_then_download(tmp_path, monkeypatch):
    raw = _synthetic_folder(tmp_path)
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path))
    monkeypatch.setattr(datasets, "_download", lambda: pytest.fail("must not download"))
    np.testing.assert_array_equal(
        datasets.load_mnist(validation_size=2).y_test, raw["test_labels"]
    )
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"${datasets.ENV_VAR}")):
        datasets.load_mnist()
    # Neither data_dir nor the variable: the keras.datasets download path.
    monkeypatch.delenv(datasets.ENV_VAR)
    calls = []

    def fake_download():
        calls.append(1)
        return (raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"])

    monkeypatch.setattr(datasets, "_download", fake_download)
    assert datasets.load_mnist(validation_size=2).x_val.shape == (2, 28, 28, 1)
    assert calls == [1]


def test_missing_folder_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=re.escape(str(tmp_path / "absent"))):
        datasets.load_mnist(tmp_path / "absent")
    _synthetic_folder(tmp_path)
    (tmp_path / datasets.FILES["train_labels"]).unlink()
    with pytest.raises(FileNotFoundError, match="train-labels-idx1-ubyte.gz not found"):
        datasets.load_mnist(tmp_path)


def test_read_idx_errors_name_the_file(tmp_path):
    good = np.arange(6, dtype=np.uint8).reshape(2, 3)
    np.testing.assert_array_equal(datasets.read_idx(_write(tmp_path / "ok.gz", _idx_bytes(good))), good)
    big_endian = np.arange(3, dtype=np.int32)
    np.testing.assert_array_equal(
        datasets.read_idx(_write(tmp_path / "i4.gz", _idx_bytes(big_endian, 0x0C))), big_endian
    )
    bad_magic = _write(tmp_path / "magic.gz", b"\x01\x00" + _idx_bytes(good)[2:])
    with pytest.raises(ValueError, match=r"magic\.gz: bad magic number 0x01000802"):
        datasets.read_idx(bad_magic)
    truncated = _write(tmp_path / "short.gz", _idx_bytes(good)[:-1])
    with pytest.raises(ValueError, match=r"short\.gz: header declares shape \(2, 3\) "
                       r"\(6 data bytes\) but the file holds 5"):
        datasets.read_idx(truncated)
    tiny = _write(tmp_path / "tiny.gz", b"\x00\x00")
    with pytest.raises(ValueError, match=r"tiny\.gz: 2 bytes"):
        datasets.read_idx(tiny)
    not_gzip = _write(tmp_path / "plain.gz", _idx_bytes(good), compress=False)
    with pytest.raises(ValueError, match=r"Cannot read IDX file .*plain\.gz"):
        datasets.read_idx(not_gzip)
    with pytest.raises(FileNotFoundError, match="IDX file not found"):
        datasets.read_idx(tmp_path / "none.gz")


def test_content_errors_name_the_file(tmp_path):
    raw = _synthetic_folder(tmp_path)
    labels = tmp_path / datasets.FILES["train_labels"]
    _write(labels, _idx_bytes(np.full(12, 10, np.uint8)))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte\.gz: expected labels in 0\.\.9"):
        datasets.load_mnist(tmp_path, 2)
    _write(labels, _idx_bytes(raw["train_labels"][:11]))
    with pytest.raises(ValueError, match="holds 12 images but .* holds 11 labels"):
        datasets.load_mnist(tmp_path, 2)
    _write(labels, _idx_bytes(raw["train_images"]))
    with pytest.raises(ValueError, match=r"train-labels.*Received: dtype=uint8, shape=\(12, 28, 28\)"):
        datasets.load_mnist(tmp_path, 2)
    _synthetic_folder(tmp_path)
    _write(tmp_path / datasets.FILES["test_images"], _idx_bytes(np.zeros((4, 14, 14), np.uint8)))
    with pytest.raises(ValueError, match=r"t10k-images.*28x28.*shape=\(4, 14, 14\)"):
        datasets.load_mnist(tmp_path, 2)


def test_bad_validation_size(tmp_path):
    _synthetic_folder(tmp_path)
    with pytest.raises(ValueError, match=r"Expected an int in \[0, 12\)\. Received: validation_size=12"):
        datasets.load_mnist(tmp_path, validation_size=12)
    with pytest.raises(ValueError, match="Received: validation_size=-1"):
        datasets.load_mnist(tmp_path, validation_size=-1)
    with pytest.raises(TypeError, match="Received: validation_size=0.1 of type float"):
        datasets.load_mnist(tmp_path, validation_size=0.1)
