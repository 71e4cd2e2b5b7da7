"""Tests for deephoyer_tf.paper.datasets: IDX parsing, MNIST and Fashion-MNIST splits,
normalization, dataset selection, errors."""

import gzip
import hashlib
import os
import pathlib
import re

import numpy as np
import pytest

from deephoyer_tf import paper
from deephoyer_tf.paper import datasets

REPO = pathlib.Path(__file__).resolve().parents[2]
FASHION_MNIST_DIR = pathlib.Path(
    os.environ.get(datasets.FASHION_ENV_VAR, REPO.parent / "shared" / "data" / "fashion-mnist")
)

# Per dataset: the fixtures of its folder, its loaded splits and its raw arrays.
_FIXTURES = {
    "mnist": ("mnist_dir", "mnist", "mnist_raw"),
    "fashion-mnist": ("fashion_mnist_dir", "fashion", "fashion_raw"),
}
both_datasets = pytest.mark.parametrize("name", datasets.DATASETS)


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


def _read_raw(folder):
    """The four files' arrays, as `read_idx` parses them (keys of `datasets.FILES`)."""
    return {key: datasets.read_idx(pathlib.Path(folder) / name) for key, name in datasets.FILES.items()}


@pytest.fixture(scope="module")
def fashion_mnist_dir():
    """The offline Fashion-MNIST copy (never the network)."""
    expected = [*datasets.FILES.values(), "SHA256SUMS"]
    missing = [name for name in expected if not (FASHION_MNIST_DIR / name).is_file()]
    if missing:
        pytest.fail(
            f"Fashion-MNIST not found at {FASHION_MNIST_DIR} (missing {missing}); "
            f"set {datasets.FASHION_ENV_VAR}"
        )
    return str(FASHION_MNIST_DIR)


@pytest.fixture(scope="module")
def mnist(mnist_dir):
    return datasets.load_mnist(mnist_dir)


@pytest.fixture(scope="module")
def fashion(fashion_mnist_dir):
    return datasets.load_fashion_mnist(fashion_mnist_dir)


@pytest.fixture(scope="module")
def mnist_raw(mnist_dir):
    return _read_raw(mnist_dir)


@pytest.fixture(scope="module")
def fashion_raw(fashion_mnist_dir):
    return _read_raw(fashion_mnist_dir)


def _real(request, name):
    """(folder, loaded splits, raw arrays) of the real dataset `name`."""
    return tuple(request.getfixturevalue(fixture) for fixture in _FIXTURES[name])


# ---------------------------------------------------------------- real MNIST and Fashion-MNIST


@pytest.mark.slow
@both_datasets
def test_read_idx_is_lossless_against_sha256sums(request, name):
    """Re-encoding each parsed array gives the bytes whose SHA-256 is published."""
    folder, _, raw = _real(request, name)
    folder = pathlib.Path(folder)
    sums = dict(
        reversed(line.split()) for line in (folder / "SHA256SUMS").read_text().splitlines()
    )
    assert sorted(sums) == sorted(name[: -len(".gz")] for name in datasets.FILES.values())
    for key, file in datasets.FILES.items():
        digest = hashlib.sha256(_idx_bytes(raw[key])).hexdigest()
        assert digest == sums[file[: -len(".gz")]], file


@both_datasets
def test_shapes_dtypes_and_labels(request, name):
    _, mnist, _ = _real(request, name)
    assert mnist.x_train.shape == (55000, 28, 28, 1)
    assert mnist.x_val.shape == (5000, 28, 28, 1)
    assert mnist.x_test.shape == (10000, 28, 28, 1)
    assert (len(mnist.y_train), len(mnist.y_val), len(mnist.y_test)) == (55000, 5000, 10000)
    for x in (mnist.x_train, mnist.x_val, mnist.x_test):
        assert x.dtype == np.float32
    for y in (mnist.y_train, mnist.y_val, mnist.y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))


@pytest.mark.slow
@both_datasets
def test_normalization_uses_training_part_statistics(request, name):
    _, mnist, raw = _real(request, name)
    images = raw["train_images"]
    train = images[:55000].astype(np.float64)
    assert mnist.mean == pytest.approx(train.mean(), rel=1e-12)
    assert mnist.std == pytest.approx(train.std(), rel=1e-12)
    assert abs(float(mnist.x_train.mean(dtype=np.float64))) < 1e-5
    assert float(mnist.x_train.std(dtype=np.float64)) == pytest.approx(1.0, abs=1e-5)
    expected = (images[:3].astype(np.float64) - train.mean()) / train.std()
    np.testing.assert_allclose(mnist.x_train[:3, ..., 0], expected, atol=1e-5)


@both_datasets
def test_validation_is_last_5000_training_images(request, name):
    _, mnist, raw = _real(request, name)
    images, labels = raw["train_images"], raw["train_labels"]
    np.testing.assert_array_equal(mnist.y_val, labels[-5000:])
    np.testing.assert_array_equal(mnist.y_train, labels[:-5000])
    back = np.rint(mnist.x_val[..., 0].astype(np.float64) * mnist.std + mnist.mean)
    np.testing.assert_array_equal(back, images[-5000:])


def test_fashion_classes_are_balanced(fashion):
    """6,000 training images per class (train and validation together), 1,000 test."""
    train_val = np.concatenate([fashion.y_train, fashion.y_val])
    np.testing.assert_array_equal(np.bincount(train_val, minlength=10), np.full(10, 6000))
    np.testing.assert_array_equal(np.bincount(fashion.y_test, minlength=10), np.full(10, 1000))
    assert fashion.y_train.max() == fashion.y_test.max() == 9


def test_fashion_images_are_not_mnist(mnist_raw, fashion_raw, mnist, fashion):
    """No image of one is an image of the other, and their pixel statistics differ."""
    for part in ("train", "test"):
        ours = {image.tobytes() for image in fashion_raw[f"{part}_images"]}
        theirs = {image.tobytes() for image in mnist_raw[f"{part}_images"]}
        assert len(ours) == len(fashion_raw[f"{part}_images"]), part  # no duplicates either
        assert not ours & theirs, part
    assert not np.array_equal(fashion_raw["test_labels"], mnist_raw["test_labels"])
    # Clothes cover more of the frame than digits: a mean pixel about twice MNIST's.
    assert fashion.mean == pytest.approx(72.88, abs=0.01)
    assert mnist.mean == pytest.approx(33.33, abs=0.01)


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
    monkeypatch.setattr(datasets, "_download", lambda name: pytest.fail("must not download"))
    np.testing.assert_array_equal(
        datasets.load_mnist(validation_size=2).y_test, raw["test_labels"]
    )
    monkeypatch.setenv(datasets.ENV_VAR, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=re.escape(f"${datasets.ENV_VAR}")):
        datasets.load_mnist()
    # Neither data_dir nor the variable: the keras.datasets download path.
    monkeypatch.delenv(datasets.ENV_VAR)
    calls = []

    def fake_download(name):
        calls.append(name)
        return (raw["train_images"], raw["train_labels"], raw["test_images"], raw["test_labels"])

    monkeypatch.setattr(datasets, "_download", fake_download)
    assert datasets.load_mnist(validation_size=2).x_val.shape == (2, 28, 28, 1)
    assert calls == ["mnist"]


def test_fashion_environment_variable_is_its_own(tmp_path, monkeypatch):
    """Fashion-MNIST reads $DEEPHOYER_FASHION_DATA_DIR, MNIST $DEEPHOYER_DATA_DIR."""
    digits, clothes = tmp_path / "digits", tmp_path / "clothes"
    digits.mkdir()
    clothes.mkdir()
    raw_digits = _synthetic_folder(digits, seed=1)
    raw_clothes = _synthetic_folder(clothes, seed=2)
    monkeypatch.setenv(datasets.ENV_VAR, str(digits))
    monkeypatch.setenv(datasets.FASHION_ENV_VAR, str(clothes))
    monkeypatch.setattr(datasets, "_download", lambda name: pytest.fail("must not download"))
    for loaded in (datasets.load_fashion_mnist(validation_size=2),
                   datasets.load_dataset("fashion-mnist", validation_size=2)):
        np.testing.assert_array_equal(loaded.y_test, raw_clothes["test_labels"])
        np.testing.assert_array_equal(loaded.y_val, raw_clothes["train_labels"][-2:])
    for loaded in (datasets.load_mnist(validation_size=2),
                   datasets.load_dataset("mnist", validation_size=2)):
        np.testing.assert_array_equal(loaded.y_test, raw_digits["test_labels"])
    # data_dir wins over the variable.
    np.testing.assert_array_equal(
        datasets.load_fashion_mnist(digits, 2).y_test, raw_digits["test_labels"]
    )
    nowhere = tmp_path / "nowhere"
    monkeypatch.setenv(datasets.FASHION_ENV_VAR, str(nowhere))
    message = (
        f"Fashion-MNIST folder not found: {nowhere} (from $DEEPHOYER_FASHION_DATA_DIR). "
        f"Expected a folder holding {sorted(datasets.FILES.values())}."
    )
    with pytest.raises(FileNotFoundError, match=re.escape(message)):
        datasets.load_fashion_mnist()
    # The MNIST variable is no fallback for Fashion-MNIST: unset, it downloads.
    monkeypatch.delenv(datasets.FASHION_ENV_VAR)
    calls = []

    def fake_download(name):
        calls.append(name)
        return tuple(raw_clothes[key] for key in datasets.FILES)

    monkeypatch.setattr(datasets, "_download", fake_download)
    assert datasets.load_fashion_mnist(validation_size=3).x_val.shape == (3, 28, 28, 1)
    assert calls == ["fashion-mnist"]


def test_download_uses_the_datasets_keras_loader(monkeypatch):
    """Without folder or variable: keras.datasets.<mnist|fashion_mnist>.load_data()."""
    import keras

    monkeypatch.delenv(datasets.ENV_VAR, raising=False)
    monkeypatch.delenv(datasets.FASHION_ENV_VAR, raising=False)
    rng = np.random.default_rng(3)
    calls = []

    def fake_loader(tag):
        def load_data():
            calls.append(tag)
            train = rng.integers(0, 256, (6, 28, 28), dtype=np.uint8)
            test = rng.integers(0, 256, (2, 28, 28), dtype=np.uint8)
            return (train, np.arange(6, dtype=np.uint8)), (test, np.arange(2, dtype=np.uint8))

        return load_data

    # No network here: anything reaching Keras' downloader fails the test.
    monkeypatch.setattr(keras.utils, "get_file", lambda *a, **k: pytest.fail("tried to download"))
    monkeypatch.setattr(keras.datasets.mnist, "load_data", fake_loader("mnist"))
    monkeypatch.setattr(keras.datasets.fashion_mnist, "load_data", fake_loader("fashion_mnist"))
    data = datasets.load_fashion_mnist(validation_size=1)
    assert calls == ["fashion_mnist"]
    assert (data.x_train.shape, data.y_val.tolist()) == ((5, 28, 28, 1), [5])
    datasets.load_dataset("mnist", validation_size=1)
    assert calls == ["fashion_mnist", "mnist"]


def test_load_dataset_dispatch_and_bad_name(tmp_path):
    assert datasets.DATASETS == ("mnist", "fashion-mnist")
    raw = _synthetic_folder(tmp_path)
    for name, load in (("mnist", datasets.load_mnist),
                       ("fashion-mnist", datasets.load_fashion_mnist)):
        by_name, direct = datasets.load_dataset(name, tmp_path, 3), load(tmp_path, 3)
        for field in ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test"):
            np.testing.assert_array_equal(getattr(by_name, field), getattr(direct, field))
        assert (by_name.mean, by_name.std) == (direct.mean, direct.std)
    np.testing.assert_array_equal(by_name.y_val, raw["train_labels"][-3:])
    # The name reaches the messages.
    with pytest.raises(FileNotFoundError, match=r"^Fashion-MNIST folder not found: "):
        datasets.load_dataset("fashion-mnist", tmp_path / "absent")
    with pytest.raises(FileNotFoundError, match=r"^MNIST folder not found: "):
        datasets.load_dataset("mnist", tmp_path / "absent")
    expected = "Expected one of ['mnist', 'fashion-mnist']."
    for bad in ("cifar", "MNIST", "fashion_mnist", None):
        message = f"Invalid value for argument `name`. {expected} Received: name={bad!r}"
        with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
            datasets.load_dataset(bad, tmp_path)
    with pytest.raises(TypeError, match="Received: validation_size='5' of type str"):
        datasets.load_dataset("fashion-mnist", tmp_path, "5")


def test_exported_from_paper():
    assert paper.load_fashion_mnist is datasets.load_fashion_mnist
    assert paper.load_dataset is datasets.load_dataset
    assert {"load_mnist", "load_fashion_mnist", "load_dataset"} <= set(paper.__all__)


def test_fashion_errors_name_the_dataset(tmp_path):
    raw = _synthetic_folder(tmp_path)
    (tmp_path / datasets.FILES["train_labels"]).unlink()
    message = (
        f"Fashion-MNIST file train-labels-idx1-ubyte.gz not found in {tmp_path} (looked for "
        "train-labels-idx1-ubyte.gz and train-labels-idx1-ubyte). Expected the four files "
        f"{sorted(datasets.FILES.values())}."
    )
    with pytest.raises(FileNotFoundError, match=f"^{re.escape(message)}$"):
        datasets.load_fashion_mnist(tmp_path)
    labels = _write(tmp_path / datasets.FILES["train_labels"], _idx_bytes(np.full(12, 10, np.uint8)))
    message = f"Invalid Fashion-MNIST file {labels}: expected labels in 0..9. Received: max label 10."
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        datasets.load_fashion_mnist(tmp_path, 2)
    _write(labels, _idx_bytes(raw["train_labels"][:11]))
    with pytest.raises(ValueError, match=r"^Fashion-MNIST train files disagree: .* holds 11 labels\.$"):
        datasets.load_fashion_mnist(tmp_path, 2)


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
