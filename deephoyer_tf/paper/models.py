"""The paper's MNIST networks: LeNet-300-100 and LeNet-5 (Caffe form).

Both take images of shape ``(28, 28, 1)`` (as `deephoyer_tf.datasets.load_mnist`
returns them) and output **logits** (no softmax): train them with
``SparseCategoricalCrossentropy(from_logits=True)``.

Layer names are fixed, because sparsity reports and per-layer thresholds refer
to them:

* `lenet_300_100`: ``flatten``, ``fc1`` (784x300), ``fc2`` (300x100),
  ``fc3`` (100x10): 266,200 kernel weights.
* `lenet_5`: ``conv1`` (5x5x1x20, ReLU), ``pool1``, ``conv2`` (5x5x20x50, ReLU),
  ``pool2``, ``flatten``, ``fc1`` (800x500), ``fc2`` (500x10): 430,500 kernel
  weights.

Both are built with Keras 3 (``flavour="keras"``) or with tf_keras
(``flavour="tf_keras"``, imported only then), with the same architecture,
names and initializers.
"""

from __future__ import annotations

import collections.abc
import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable
    from typing import Mapping
    from typing import Union

    ModelLike = Any  # a Keras 3 or tf_keras model
    RegularizerLike = Callable[[Any], Any]  # a Keras regularizer (callable with get_config)
    KernelRegularizer = Union[RegularizerLike, Mapping[str, Union[RegularizerLike, None]], None]

FLAVOURS = ("keras", "tf_keras")


def _keras(flavour):
    if flavour not in FLAVOURS:
        raise ValueError(
            f"Invalid value for argument `flavour`. Expected one of {FLAVOURS}. "
            f"Received: flavour={flavour!r}"
        )
    return importlib.import_module(flavour)


def _regularizer_chooser(kernel_regularizer, names):
    """Maps each kernel layer name to its regularizer (or None)."""
    if kernel_regularizer is None:
        return dict.fromkeys(names)
    if isinstance(kernel_regularizer, collections.abc.Mapping):
        unknown = sorted(set(kernel_regularizer) - set(names))
        if unknown:
            raise ValueError(
                "Invalid value for argument `kernel_regularizer`. Expected a "
                f"regularizer or a mapping whose keys are among {list(names)}. "
                f"Received keys: {unknown}"
            )
        chooser = {name: kernel_regularizer.get(name) for name in names}
    else:
        chooser = dict.fromkeys(names, kernel_regularizer)
    for name, value in chooser.items():
        if value is not None and not (callable(value) and hasattr(value, "get_config")):
            raise TypeError(
                "Invalid type for argument `kernel_regularizer`. Expected a "
                "Keras regularizer (callable with `get_config`), a mapping from "
                f"layer name to regularizer, or None. Received: {value!r} of "
                f"type {type(value).__name__} (for layer {name!r})"
            )
    return chooser


def lenet_300_100(
    kernel_regularizer: KernelRegularizer = None,
    flavour: str = "keras",
    name: str = "lenet_300_100",
) -> ModelLike:
    """LeNet-300-100: a 784-300-100-10 perceptron with ReLU.

    ``logits = fc3(relu(fc2(relu(fc1(flatten(x))))))`` with
    ``x`` of shape ``(batch, 28, 28, 1)``; kernels ``784*300 + 300*100 +
    100*10 = 266,200`` weights (plus 410 biases), as in the paper's Table 1.

    Args:
        kernel_regularizer: None, a Keras regularizer attached to every kernel
            (one shared instance, e.g. ``deephoyer_tf.HoyerSquare(1e-4)``), or a
            mapping from layer name (``"fc1"``, ``"fc2"``, ``"fc3"``) to
            regularizer.
        flavour: ``"keras"`` (Keras 3) or ``"tf_keras"``.
        name: name of the model.

    Returns:
        An uncompiled Sequential model with input shape ``(28, 28, 1)`` and 10
        logits as output (no softmax).

    Raises:
        ValueError: unknown `flavour`, or a mapping naming an unknown layer.
        TypeError: `kernel_regularizer` is not a regularizer.

    Example::

        model = lenet_300_100()
        sum(model.get_layer(n).kernel.shape.num_elements()
            for n in ("fc1", "fc2", "fc3"))  # 266200
    """
    k = _keras(flavour)
    reg = _regularizer_chooser(kernel_regularizer, ("fc1", "fc2", "fc3"))
    return k.Sequential(
        [
            k.Input(shape=(28, 28, 1), name="image"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(300, activation="relu", kernel_regularizer=reg["fc1"], name="fc1"),
            k.layers.Dense(100, activation="relu", kernel_regularizer=reg["fc2"], name="fc2"),
            k.layers.Dense(10, kernel_regularizer=reg["fc3"], name="fc3"),
        ],
        name=name,
    )


def lenet_5(
    kernel_regularizer: KernelRegularizer = None,
    flavour: str = "keras",
    name: str = "lenet_5",
    conv_activation: str | None = "relu",
) -> ModelLike:
    """LeNet-5 in its Caffe form (the paper's "LeNet-5").

    ``conv1`` 20 filters 5x5 (valid) -> max-pool 2 -> ``conv2`` 50 filters 5x5
    (valid) -> max-pool 2 -> flatten (4*4*50 = 800) -> ``fc1`` 500 ReLU ->
    ``fc2`` 10 logits. Kernels: ``5*5*1*20 + 5*5*20*50 + 800*500 + 500*10 =
    430,500`` weights (plus 580 biases), as in the paper's Table 2.

    The paper's official code applies a ReLU after each convolution (the
    default, ``conv_activation="relu"``); Caffe's ``lenet_train_test.prototxt``
    has none (``conv_activation=None``). Flatten follows Keras' channels-last
    order ``(h, w, c)``.

    Args:
        kernel_regularizer: None, a Keras regularizer attached to every kernel,
            or a mapping from layer name (``"conv1"``, ``"conv2"``, ``"fc1"``,
            ``"fc2"``) to regularizer.
        flavour: ``"keras"`` (Keras 3) or ``"tf_keras"``.
        name: name of the model.
        conv_activation: ``"relu"`` (default) or None: the activation of
            ``conv1`` and ``conv2``.

    Returns:
        An uncompiled Sequential model with input shape ``(28, 28, 1)`` and 10
        logits as output (no softmax).

    Raises:
        ValueError: unknown `flavour` or `conv_activation`, or a mapping naming
            an unknown layer.
        TypeError: `kernel_regularizer` is not a regularizer.

    Example::

        model = lenet_5(kernel_regularizer={"fc1": deephoyer_tf.HoyerSquare(1e-4)})
        model.get_layer("fc1").kernel.shape  # (800, 500)
    """
    k = _keras(flavour)
    if conv_activation not in ("relu", None):
        raise ValueError(
            "Invalid value for argument `conv_activation`. Expected \"relu\" or "
            f"None. Received: conv_activation={conv_activation!r}"
        )
    reg = _regularizer_chooser(kernel_regularizer, ("conv1", "conv2", "fc1", "fc2"))
    conv = dict(kernel_size=5, padding="valid", activation=conv_activation)
    return k.Sequential(
        [
            k.Input(shape=(28, 28, 1), name="image"),
            k.layers.Conv2D(20, **conv, kernel_regularizer=reg["conv1"], name="conv1"),
            k.layers.MaxPooling2D(2, name="pool1"),
            k.layers.Conv2D(50, **conv, kernel_regularizer=reg["conv2"], name="conv2"),
            k.layers.MaxPooling2D(2, name="pool2"),
            k.layers.Flatten(name="flatten"),
            k.layers.Dense(500, activation="relu", kernel_regularizer=reg["fc1"], name="fc1"),
            k.layers.Dense(10, kernel_regularizer=reg["fc2"], name="fc2"),
        ],
        name=name,
    )
