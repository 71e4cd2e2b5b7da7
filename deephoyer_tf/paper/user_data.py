"""A user's model and data for ``reproduce`` and ``search`` (``--model-file``, ``--data``).

Besides the LeNets, both commands take a user's trained dense Keras model
(``--model-file dense.keras``, loaded with `loading.load_model`, code
refused) and either

* ``--data FILE.npz``: arrays ``x_train``, ``y_train``, ``x_val``, ``y_val``
  and optionally ``x_test``, ``y_test`` (both or neither), the images as the
  model takes them and integer class labels; or
* ``--dataset {mnist,fashion-mnist}``: the images scaled as the recipe's
  `inputs` says and reshaped to the model's input shape (28 x 28 x 1 or
  784 values).

`ArraySplits` holds them with the attribute names of `datasets.MnistSplits`,
so the reproduction's stages read either.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib

import numpy as np

from deephoyer_tf._internal import validation

REQUIRED = ("x_train", "y_train", "x_val", "y_val")
OPTIONAL = ("x_test", "y_test")


@dataclasses.dataclass(frozen=True)
class ArraySplits:
    """Training, validation and (optional) test arrays; labels are integer classes."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None

    @property
    def has_test(self) -> bool:
        return self.x_test is not None

    @property
    def n_classes(self) -> int:
        labels = [self.y_train, self.y_val] + ([self.y_test] if self.has_test else [])
        return int(max(int(np.max(y)) for y in labels)) + 1


def _labels(y, key, path):
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        raise ValueError(f"Invalid value in {path}: `{key}` must hold one integer class per example "
                         f"(shape (N,)). Received shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        if not (np.issubdtype(y.dtype, np.floating) and np.all(np.equal(np.mod(y, 1), 0))):
            raise ValueError(f"Invalid value in {path}: `{key}` must hold integer class labels. "
                             f"Received dtype {y.dtype}")
    y = y.astype(np.int64)
    if y.size and y.min() < 0:
        raise ValueError(f"Invalid value in {path}: `{key}` holds a negative label ({y.min()})")
    return y


def load_arrays(path: str | os.PathLike) -> ArraySplits:
    """Reads an `.npz` of ``x_train, y_train, x_val, y_val`` (and optionally ``x_test, y_test``).

    Raises `ValueError` naming the file and the array that is missing or
    does not fit (lengths of x and y differ, no examples, labels not integer
    classes, x shapes differing between splits), `FileNotFoundError` if the
    file does not exist. Pickled objects are refused (``allow_pickle=False``).
    """
    path = pathlib.Path(validation.check_path(path, "data"))
    if not path.is_file():
        raise FileNotFoundError(f"Invalid value for argument `data`: no such file: {path}")
    try:
        with np.load(path, allow_pickle=False) as stored:
            arrays = {key: stored[key] for key in stored.files}
    except (OSError, ValueError) as error:
        raise ValueError(f"Invalid value for argument `data`: {path} is not a readable .npz file of "
                         f"arrays ({type(error).__name__}: {error})") from None
    missing = [key for key in REQUIRED if key not in arrays]
    if missing:
        raise ValueError(f"Invalid value for argument `data`: {path} lacks {', '.join(missing)}. Expected "
                         f"arrays {', '.join(REQUIRED)} (and optionally {', '.join(OPTIONAL)}). "
                         f"Received: {', '.join(sorted(arrays)) or 'no arrays'}")
    test = [key for key in OPTIONAL if key in arrays]
    if len(test) == 1:
        raise ValueError(f"Invalid value for argument `data`: {path} has {test[0]} without its pair; "
                         "give both x_test and y_test, or neither")
    splits = {}
    for split in ("train", "val", *(("test",) if test else ())):
        x = np.asarray(arrays[f"x_{split}"], dtype=np.float32)
        y = _labels(arrays[f"y_{split}"], f"y_{split}", path)
        if len(x) != len(y) or len(x) == 0:
            raise ValueError(f"Invalid value in {path}: x_{split} and y_{split} must have the same "
                             f"nonzero length. Received {len(x)} and {len(y)}")
        splits[f"x_{split}"], splits[f"y_{split}"] = x, y
    shapes = {key: splits[key].shape[1:] for key in splits if key.startswith("x_")}
    if len(set(shapes.values())) > 1:
        raise ValueError(f"Invalid value in {path}: the x arrays differ in example shape: "
                         + ", ".join(f"{k} {v}" for k, v in shapes.items()))
    return ArraySplits(**splits)


def model_input_shape(model) -> tuple:
    """The shape of one example `model` takes (its single input's, without the batch axis)."""
    inputs = getattr(model, "inputs", None)
    if not inputs or len(inputs) != 1:
        raise ValueError(f"Invalid value for argument `model_file`: the model must have one input. "
                         f"Received {len(inputs or [])} inputs")
    return tuple(inputs[0].shape[1:])


def fit_to_model(splits: ArraySplits, shape: tuple, source: str) -> ArraySplits:
    """`splits` with every x reshaped to `shape` (e.g. 28 x 28 x 1 to 784) when the sizes agree."""
    out = {}
    for field in dataclasses.fields(splits):
        value = getattr(splits, field.name)
        if field.name.startswith("x_") and value is not None:
            if value.shape[1:] != shape:
                if None in shape or int(np.prod(value.shape[1:])) != int(np.prod(shape)):
                    raise ValueError(
                        f"Invalid value for argument `model_file`: the model takes examples of shape "
                        f"{shape}, {source} gives {field.name} of shape {tuple(value.shape[1:])}")
                value = value.reshape((len(value), *shape))
        out[field.name] = value
    return ArraySplits(**out)


def check_classifier(model, n_classes: int):
    """Refuses a model whose output is not one logit per class (a softmax output, too few classes)."""
    outputs = getattr(model, "outputs", None) or []
    if len(outputs) != 1:
        raise ValueError("Invalid value for argument `model_file`: the model must have one output "
                         f"(logits, one per class). Received {len(outputs)} outputs")
    width = outputs[0].shape[-1]
    if width is None or width < n_classes:
        raise ValueError(f"Invalid value for argument `model_file`: the model outputs {width} values, "
                         f"the labels have {n_classes} classes. Expected one logit per class")
    last = model.layers[-1] if getattr(model, "layers", None) else None
    activation = getattr(getattr(last, "activation", None), "__name__", None)
    if activation == "softmax" or type(last).__name__ == "Softmax":
        raise ValueError(f"Invalid value for argument `model_file`: its last layer {last.name!r} "
                         "applies a softmax; the training here expects logits. Save the model "
                         "without the final softmax")


def dataset_arrays(dataset, data_dir, inputs):
    """MNIST or Fashion-MNIST as `ArraySplits`, scaled as `inputs` says; and ``(scale, offset)``.

    ``model_input = pixel * scale + offset`` (`preprocessing.scale_and_offset`).
    """
    from deephoyer_tf.paper import datasets
    from deephoyer_tf.paper import preprocessing

    data = datasets.load_dataset(dataset, data_dir)
    scale_offset = preprocessing.scale_and_offset(inputs, data.mean, data.std)
    data = preprocessing.recipe_inputs(data, inputs)
    return ArraySplits(data.x_train, data.y_train, data.x_val, data.y_val, data.x_test, data.y_test), scale_offset
