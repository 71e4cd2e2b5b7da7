"""MNIST and Fashion-MNIST for the paper's experiments, read from IDX files.

`load_mnist` and `load_fashion_mnist` (or `load_dataset` by name, one of
`DATASETS`) read the four files of the original distribution, which both
datasets name alike::

    train-images-idx3-ubyte.gz   train-labels-idx1-ubyte.gz
    t10k-images-idx3-ubyte.gz    t10k-labels-idx1-ubyte.gz

from a folder (``data_dir``, else the dataset's environment variable:
``$DEEPHOYER_DATA_DIR`` for MNIST, ``$DEEPHOYER_FASHION_DATA_DIR`` for
Fashion-MNIST), and only when neither is given download the dataset through
`keras.datasets.mnist` or `keras.datasets.fashion_mnist` (which needs internet
access). Uncompressed files (the same names without ``.gz``) are accepted too.

IDX format: a big-endian header, ``0x00 0x00 <type> <ndim>`` then one uint32
per dimension, followed by the raw data; both datasets use type ``0x08``
(uint8), so images have magic number 2051 (``0x00000803``) and labels 2049
(``0x00000801``).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pathlib
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import validation

if TYPE_CHECKING:
    import tensorflow as tf

ENV_VAR = "DEEPHOYER_DATA_DIR"
FASHION_ENV_VAR = "DEEPHOYER_FASHION_DATA_DIR"

FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}

_IMAGE_MAGIC = 2051
_LABEL_MAGIC = 2049
_IDX_DTYPES = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


@dataclasses.dataclass(frozen=True)
class _Source:
    """How one dataset is found: its name in messages, its variable, its download."""

    title: str  # in messages: "MNIST file ... not found"
    env_var: str  # folder used when `data_dir` is None
    keras_module: str  # `keras.datasets.<keras_module>.load_data()` downloads it


_SOURCES = {
    "mnist": _Source("MNIST", ENV_VAR, "mnist"),
    "fashion-mnist": _Source("Fashion-MNIST", FASHION_ENV_VAR, "fashion_mnist"),
}

#: The names `load_dataset` accepts.
DATASETS = tuple(_SOURCES)


@dataclasses.dataclass(frozen=True)
class MnistSplits:
    """MNIST (or Fashion-MNIST) split into training, validation and test parts.

    Images are float32 of shape ``(N, 28, 28, 1)`` (channels last; LeNet-5
    takes them as they are, LeNet-300-100 flattens them), normalized as
    ``(pixel - mean) / std`` with the scalar `mean` and `std` of the training
    part's pixels (in [0, 255]). Labels are int64 in ``0..9``.

    Attributes:
        x_train, y_train: the first ``60000 - validation_size`` training images.
        x_val, y_val: the last ``validation_size`` training images.
        x_test, y_test: the 10,000 test images; use them only for the final
            number.
        mean, std: the normalization statistics (raw pixel units).
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    mean: float
    std: float

    def dataset(
        self, split: str, batch_size: int = 128, shuffle: bool = False, seed: int | None = None
    ) -> tf.data.Dataset:
        """A batched `tf.data.Dataset` of ``(images, labels)`` for one split.

        Args:
            split: ``"train"``, ``"val"`` or ``"test"``.
            batch_size: positive int, default 128.
            shuffle: reshuffle the whole split each epoch (for training).
            seed: seed of the shuffle, or None.

        Returns:
            A `tf.data.Dataset`, prefetched.

        Example::

            data = load_mnist("../shared/data/mnist")
            model.fit(data.dataset("train", shuffle=True), epochs=1)
        """
        import tensorflow as tf

        arrays = {
            "train": (self.x_train, self.y_train),
            "val": (self.x_val, self.y_val),
            "test": (self.x_test, self.y_test),
        }
        if split not in arrays:
            raise ValueError(
                "Invalid value for argument `split`. Expected one of "
                f"{sorted(arrays)}. Received: split={split!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(
                "Invalid value for argument `batch_size`. Expected a positive "
                f"int. Received: batch_size={batch_size!r}"
            )
        x, y = arrays[split]
        data = tf.data.Dataset.from_tensor_slices((x, y))
        if shuffle:
            data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
        return data.batch(batch_size).prefetch(tf.data.AUTOTUNE)


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads one IDX file (gzip-compressed when its name ends in ``.gz``).

    Args:
        path: path of the file.

    Returns:
        A NumPy array with the shape and dtype the header declares (native
        byte order).

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the header is malformed or the data size does not match
            it; the message names the file.
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"IDX file not found: {path}")
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as e:  # corrupt gzip stream
        raise ValueError(f"Cannot read IDX file {path}: {e}") from e
    if len(raw) < 4:
        raise ValueError(
            f"Invalid IDX file {path}: {len(raw)} bytes, too short for the "
            "4-byte magic number."
        )
    zero, type_code, ndim = int.from_bytes(raw[:2], "big"), raw[2], raw[3]
    if zero != 0 or type_code not in _IDX_DTYPES or ndim == 0:
        raise ValueError(
            f"Invalid IDX file {path}: bad magic number "
            f"0x{int.from_bytes(raw[:4], 'big'):08x}. Expected 0x0000TTNN with "
            f"type TT in {sorted(hex(t) for t in _IDX_DTYPES)} and NN >= 1 dimensions."
        )
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(
            f"Invalid IDX file {path}: header declares {ndim} dimensions but "
            f"the file has only {len(raw)} bytes."
        )
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) - header != expected:
        raise ValueError(
            f"Invalid IDX file {path}: header declares shape {shape} "
            f"({expected} data bytes) but the file holds {len(raw) - header} "
            "data bytes."
        )
    data = np.frombuffer(raw, dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))


def _find(folder, name, title):
    for candidate in (folder / name, folder / name[: -len(".gz")]):
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"{title} file {name} not found in {folder} (looked for {name} and "
        f"{name[:-len('.gz')]}). Expected the four files {sorted(FILES.values())}."
    )


def _read_folder(folder, title):
    arrays = {}
    for key, name in FILES.items():
        path = _find(folder, name, title)
        data = read_idx(path)
        magic, ndim = (_IMAGE_MAGIC, 3) if key.endswith("images") else (_LABEL_MAGIC, 1)
        if data.dtype != np.uint8 or data.ndim != ndim:
            raise ValueError(
                f"Invalid {title} file {path}: expected uint8 data with {ndim} "
                f"dimension(s) (magic number {magic}). Received: "
                f"dtype={data.dtype}, shape={data.shape}."
            )
        if key.endswith("images") and data.shape[1:] != (28, 28):
            raise ValueError(
                f"Invalid {title} file {path}: expected 28x28 images. "
                f"Received: shape={data.shape}."
            )
        if key.endswith("labels") and data.size and data.max() > 9:
            raise ValueError(
                f"Invalid {title} file {path}: expected labels in 0..9. "
                f"Received: max label {int(data.max())}."
            )
        arrays[key] = (path, data)
    for part in ("train", "test"):
        (ipath, images), (lpath, labels) = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if len(images) != len(labels):
            raise ValueError(
                f"{title} {part} files disagree: {ipath} holds {len(images)} "
                f"images but {lpath} holds {len(labels)} labels."
            )
    return (
        arrays["train_images"][1],
        arrays["train_labels"][1],
        arrays["test_images"][1],
        arrays["test_labels"][1],
    )


def _pixel_statistics(images):
    """Exact mean and (population) std of uint8 pixels, via their histogram."""
    counts = np.bincount(images.ravel(), minlength=256).astype(np.float64)
    values = np.arange(counts.size, dtype=np.float64)
    mean = float(counts @ values / counts.sum())
    variance = float(counts @ (values - mean) ** 2 / counts.sum())
    return mean, variance**0.5


def _download(name):
    """The dataset `name` (a key of `_SOURCES`) through `keras.datasets`."""
    import keras

    module = getattr(keras.datasets, _SOURCES[name].keras_module)
    (x_train, y_train), (x_test, y_test) = module.load_data()
    return x_train, y_train, x_test, y_test


def _load(name, data_dir, validation_size):
    """`load_dataset` after `name` is checked; see `load_mnist`."""
    title, env_var = _SOURCES[name].title, _SOURCES[name].env_var
    if isinstance(validation_size, bool) or not isinstance(
        validation_size, (int, np.integer)
    ):
        raise TypeError(
            "Invalid type for argument `validation_size`. Expected an int. "
            f"Received: validation_size={validation_size!r} of type "
            f"{type(validation_size).__name__}"
        )
    source = "argument `data_dir`"
    if data_dir is None and os.environ.get(env_var):
        data_dir, source = os.environ[env_var], f"${env_var}"
    if data_dir is None:
        x_train, y_train, x_test, y_test = _download(name)
    else:
        folder = pathlib.Path(data_dir).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(
                f"{title} folder not found: {folder} (from {source}). Expected a "
                f"folder holding {sorted(FILES.values())}."
            )
        x_train, y_train, x_test, y_test = _read_folder(folder, title)
    if not 0 <= validation_size < len(x_train):
        raise ValueError(
            "Invalid value for argument `validation_size`. Expected an int in "
            f"[0, {len(x_train)}). Received: validation_size={validation_size}"
        )
    split = len(x_train) - int(validation_size)
    mean, std = _pixel_statistics(x_train[:split])
    if not std > 0:
        raise ValueError(
            f"Cannot normalize {title}: the training images have zero variance "
            f"(all pixels equal {mean})."
        )

    def normalize(images):
        x = (images.astype(np.float32) - np.float32(mean)) / np.float32(std)
        return x[..., np.newaxis]

    return MnistSplits(
        x_train=normalize(x_train[:split]),
        y_train=y_train[:split].astype(np.int64),
        x_val=normalize(x_train[split:]),
        y_val=y_train[split:].astype(np.int64),
        x_test=normalize(x_test),
        y_test=y_test.astype(np.int64),
        mean=mean,
        std=std,
    )


def load_mnist(
    data_dir: str | os.PathLike | None = None, validation_size: int = 5000
) -> MnistSplits:
    """Loads MNIST, normalized, with a validation split.

    The folder is ``data_dir`` if given, else ``$DEEPHOYER_DATA_DIR`` if set;
    only when neither is given is MNIST downloaded through
    `keras.datasets.mnist.load_data()` (internet access needed).

    Normalization (as in the paper): ``x = (pixel - mean) / std`` where `mean`
    and `std` are the scalar mean and standard deviation of all pixels of the
    *training part only* (the first ``60000 - validation_size`` images); the
    validation and test images use the same statistics, so only the training
    part is exactly zero-mean, unit-variance.

    Validation split: the *last* `validation_size` training images, so the
    choice is deterministic and the test images are never used for choices.

    Args:
        data_dir: folder holding the four ``*-ubyte.gz`` files (see `FILES`),
            or None.
        validation_size: int in ``[0, 60000)``, default 5000.

    Returns:
        A `MnistSplits`; images are float32 of shape ``(N, 28, 28, 1)``,
        labels int64.

    Raises:
        FileNotFoundError: the folder or one of the files is missing.
        ValueError: a file is not valid MNIST IDX data (the message names it),
            or `validation_size` is out of range.
        TypeError: `validation_size` is not an int.

    Example::

        data = load_mnist("../shared/data/mnist")
        data.x_train.shape, data.x_val.shape, data.x_test.shape
        # ((55000, 28, 28, 1), (5000, 28, 28, 1), (10000, 28, 28, 1))
    """
    return _load("mnist", data_dir, validation_size)


def load_fashion_mnist(
    data_dir: str | os.PathLike | None = None, validation_size: int = 5000
) -> MnistSplits:
    """Loads Fashion-MNIST, normalized, with a validation split.

    The same as `load_mnist` (same files, same normalization by the training
    part's pixel statistics, same validation split: the last
    `validation_size` training images), for Fashion-MNIST (Xiao et al.,
    2017: 28x28 grayscale images of 10 clothing classes, 6,000 training and
    1,000 test images per class). The folder is ``data_dir`` if given, else
    ``$DEEPHOYER_FASHION_DATA_DIR`` if set; only when neither is given is it
    downloaded through `keras.datasets.fashion_mnist.load_data()` (internet
    access needed).

    Args:
        data_dir: folder holding the four ``*-ubyte.gz`` files (see `FILES`),
            or None.
        validation_size: int in ``[0, 60000)``, default 5000.

    Returns:
        A `MnistSplits`; images are float32 of shape ``(N, 28, 28, 1)``,
        labels int64 (0 T-shirt/top, 1 trouser, 2 pullover, 3 dress, 4 coat,
        5 sandal, 6 shirt, 7 sneaker, 8 bag, 9 ankle boot).

    Raises:
        FileNotFoundError: the folder or one of the files is missing.
        ValueError: a file is not valid IDX data of the expected shape (the
            message names it), or `validation_size` is out of range.
        TypeError: `validation_size` is not an int.

    Example::

        data = load_fashion_mnist("../shared/data/fashion-mnist")
        data.x_train.shape, data.x_val.shape, data.x_test.shape
        # ((55000, 28, 28, 1), (5000, 28, 28, 1), (10000, 28, 28, 1))
    """
    return _load("fashion-mnist", data_dir, validation_size)


def load_dataset(
    name: str, data_dir: str | os.PathLike | None = None, validation_size: int = 5000
) -> MnistSplits:
    """Loads a dataset by name: `load_mnist` or `load_fashion_mnist`.

    Args:
        name: one of `DATASETS`: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: folder of the dataset's four IDX files, or None (then the
            dataset's environment variable, else the download; see
            `load_mnist` and `load_fashion_mnist`).
        validation_size: int in ``[0, 60000)``, default 5000.

    Returns:
        A `MnistSplits`.

    Raises:
        ValueError: `name` is not one of `DATASETS`, or as `load_mnist`.
        FileNotFoundError, TypeError: as `load_mnist`.

    Example::

        data = load_dataset("fashion-mnist", "../shared/data/fashion-mnist")
    """
    validation.check_choice(name, "name", DATASETS)
    return _load(name, data_dir, validation_size)
