"""`evaluate`: the accuracy and sparsity of a saved MNIST / Fashion-MNIST model.

A model saved by `reproduce` takes raw pixels (0 to 255) and applies its own
input scaling in a first `Rescaling` (or `Normalization`) layer, so it can be
evaluated without knowing its recipe. ``deephoyer-tf evaluate`` calls
`evaluate` and prints its result as JSON on the last line.
"""

from __future__ import annotations

import os

import keras
import numpy as np

from deephoyer_tf._internal import loading
from deephoyer_tf._internal import validation
from deephoyer_tf.paper import datasets
from deephoyer_tf.paper import preprocessing
from deephoyer_tf.structure import report as report_lib

SPLITS = ("train", "val", "test")
_PREPROCESSING_TYPES = ("Rescaling", "Normalization")


def load(path, safe_mode=True):
    """Loads a model with the package's loader: no code from the file runs unless `safe_mode=False`."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"No such model file: {path}")
    return loading.load_model(path, compile=False, safe_mode=safe_mode)


def has_preprocessing(model):
    """True when `model` starts with a `Rescaling` or `Normalization` layer."""
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    return bool(layers) and type(layers[0]).__name__ in _PREPROCESSING_TYPES


def evaluate(model, dataset="mnist", data_dir=None, split="test", batch_size=1000, safe_mode=True):
    """Accuracy on one split, nonzero weights, MACs and structure of `model`.

    Args:
        model: a Keras 3 model taking raw pixels of shape ``(28, 28, 1)``
            (float, 0 to 255) and starting with its own `Rescaling` or
            `Normalization` layer, or the path of a `.keras` file of one
            (loaded with `deephoyer_tf.load_model`, which refuses a file
            holding code unless ``safe_mode=False``).
        dataset: ``"mnist"`` or ``"fashion-mnist"``.
        data_dir: folder of the dataset's IDX files (default: the dataset's
            environment variable, else a download).
        split: ``"test"`` (default), ``"val"`` (the last 5,000 training
            images) or ``"train"``.

    Returns:
        A dict: ``accuracy``, ``split``, ``dataset``, ``examples``,
        ``nonzero_weights`` and ``total_weights`` (kernels), ``nonzero_biases``
        and ``total_biases``, ``macs`` and ``dense_macs`` (per example),
        ``structure`` (live units per layer).

    Raises:
        ValueError: unknown `dataset` or `split`; a model without its own
            input preprocessing layer.
    """
    validation.check_choice(dataset, "dataset", datasets.DATASETS)
    validation.check_choice(split, "split", SPLITS)
    if isinstance(model, (str, os.PathLike)):
        model = load(model, safe_mode=safe_mode)
    if not has_preprocessing(model):
        raise ValueError(
            f"Invalid value for argument `model`: model {model.name!r} does not start with a "
            f"{' or '.join(_PREPROCESSING_TYPES)} layer, so the input scaling it was trained with is "
            "unknown. evaluate() feeds raw pixels (0 to 255); add the scaling as the model's first "
            "layer (deephoyer_tf.paper.preprocessing.with_preprocessing). Received first layers: "
            f"{[type(layer).__name__ for layer in model.layers[:2]]}")
    data = datasets.load_dataset(dataset, data_dir)
    x, y = {"train": (data.x_train, data.y_train), "val": (data.x_val, data.y_val),
            "test": (data.x_test, data.y_test)}[split]
    pixels = preprocessing.raw_pixels(x, data.mean, data.std)
    logits = model.predict(pixels, batch_size=batch_size, verbose=0)
    accuracy = float(np.mean(np.argmax(logits, axis=-1) == y))
    report = report_lib.sparsity_report(model)
    return {
        "dataset": dataset,
        "split": split,
        "examples": int(len(y)),
        "accuracy": accuracy,
        **size_numbers(report),
    }


def size_numbers(report):
    """A `SparsityReport`'s sizes as `evaluate` and `reproduce`'s results record them.

    Weights (kernels) and biases are counted separately, as the paper counts
    weights; MACs are per example.
    """
    return {
        "nonzero_weights": report.nonzero_weights,
        "total_weights": report.total_weights,
        "nonzero_biases": sum(r.nonzero_biases for r in report.layers),
        "total_biases": sum(r.bias_weights for r in report.layers),
        "macs": report.macs,
        "dense_macs": report.dense_macs,
        "structure": report.structure,
    }
