"""Input preprocessing of the paper's recipes, and models that carry their own.

The datasets module gives images standardized as ``(pixel - mean) / std``
(the paper's text). The authors' public code feeds pixels scaled to [0, 1]
instead (``inputs="unit"``). Whatever a recipe trains on, the model it saves
takes raw pixels (float, 0 to 255) and starts with a `Rescaling` layer that
applies the recipe's preprocessing, so it can be evaluated without knowing
the recipe (`with_preprocessing`, `deephoyer-tf evaluate`).
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from deephoyer_tf._internal import validation

#: The input scalings a recipe can use.
INPUTS = ("standardize", "unit")

#: The name of the `Rescaling` layer `with_preprocessing` puts first.
LAYER_NAME = "preprocess"


def raw_pixels(x, mean, std):
    """Pixels in [0, 255] (float32) from images standardized with `mean`, `std`.

    Exact: the standardized values are rounded back to the integer pixels.
    """
    return np.round(np.asarray(x, np.float64) * std + mean).astype(np.float32)


def scale_and_offset(inputs, mean, std):
    """``(scale, offset)`` with ``model_input = pixel * scale + offset`` for `inputs`."""
    validation.check_choice(inputs, "inputs", INPUTS)
    if inputs == "unit":
        return 1.0 / 255.0, 0.0
    return 1.0 / std, -mean / std


def recipe_inputs(data, inputs):
    """`data` (a `MnistSplits`, standardized) with its images as `inputs` wants them."""
    validation.check_choice(inputs, "inputs", INPUTS)
    if inputs == "standardize":
        return data

    def unit(x):
        return raw_pixels(x, data.mean, data.std) / np.float32(255.0)

    return dataclasses.replace(
        data, x_train=unit(data.x_train), x_val=unit(data.x_val), x_test=unit(data.x_test))


def with_preprocessing(model, scale, offset):
    """A model of raw pixels: ``Rescaling(scale, offset)`` then `model`'s layers.

    The layers (and so the weights) are shared with `model`. A Sequential
    model's layers are laid out flat after the `Rescaling` layer; any other
    model is called as one nested layer.

    Args:
        model: a built Keras model with one input.
        scale, offset: floats; the model sees ``pixel * scale + offset``.
    """
    if not isinstance(model, keras.Model) or len(model.inputs) != 1:
        raise TypeError(
            "Invalid value for argument `model`. Expected a built Keras 3 model with one "
            f"input. Received: {type(model).__name__}")
    shape = tuple(model.inputs[0].shape[1:])
    rescale = keras.layers.Rescaling(float(scale), float(offset), name=LAYER_NAME)
    if isinstance(model, keras.Sequential):
        wrapped = keras.Sequential(
            [keras.Input(shape=shape, name="pixels"), rescale, *model.layers], name=model.name)
    else:
        pixels = keras.Input(shape=shape, name="pixels")
        wrapped = keras.Model(pixels, model(rescale(pixels)), name=model.name)
    return wrapped
