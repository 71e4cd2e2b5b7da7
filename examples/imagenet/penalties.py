"""The recipe's kernel penalties and pruning rule.

* `WithL2`: a DeepHoyer penalty plus coupled L2 weight decay on one kernel.
* `LayerRulePruning`: `deephoyer_tf.ThresholdPruning` with the paper's AlexNet
  rule, an absolute threshold for convolutions and ``std_ratio * std(W)`` for
  fully connected layers, in one pruning step.

Why L2 in the loss and not the optimizer's ``weight_decay``. The paper trains
with SGD (momentum 0.9) and weight decay 1e-4 in the Caffe / PyTorch sense:
``wd * w`` is added to the gradient *before* the momentum update. Keras'
``SGD(weight_decay=...)`` is decoupled: it subtracts ``lr * wd * w`` outside
the momentum, which shrinks weights about ``1 / (1 - momentum) = 10`` times
less at the same ``wd``. The gradient of ``(wd / 2) * sum(w^2)`` is exactly
``wd * w``, so the coupled decay is ``l2 = wd / 2`` in the loss. Biases and
BatchNormalization parameters are not decayed (Caffe's AlexNet uses
``decay_mult: 0`` on biases).
"""

import numbers

import keras
import numpy as np
import tensorflow as tf

import deephoyer_tf

_PACKAGE = "deephoyer_imagenet"


def _register(cls):
    keras.saving.register_keras_serializable(package=_PACKAGE)(cls)
    try:
        import tf_keras
    except ImportError:  # pragma: no cover
        return cls
    tf_keras.utils.register_keras_serializable(package=_PACKAGE)(cls)
    return cls


@_register
class WithL2(deephoyer_tf.DeepHoyerRegularizer):
    """``penalty(W) + l2 * sum(W^2)``: a DeepHoyer penalty plus L2 weight decay.

    A `deephoyer_tf.DeepHoyerRegularizer` whose strength variables are those
    of `penalty`: `deephoyer_tf.ThresholdPruning` (which zeroes every strength
    variable of the model) switches the DeepHoyer term off for fine-tuning and
    keeps the weight decay, as SGD's decay keeps running in the paper.

    Args:
        penalty: a `deephoyer_tf.DeepHoyerRegularizer` (e.g. ``HoyerSquare(1e-6)``).
        l2: float >= 0; ``wd / 2`` for SGD weight decay ``wd`` (see the module
            docstring).

    Example: ``WithL2(HoyerSquare(1.0), 0.5)([3., 4.]) = 49 / 25 + 0.5 * 25 = 14.46``.
    """

    def __init__(self, penalty, l2):
        if not isinstance(penalty, deephoyer_tf.DeepHoyerRegularizer):
            raise TypeError(
                "Invalid type for argument `penalty`. Expected a "
                "deephoyer_tf.DeepHoyerRegularizer. "
                f"Received: penalty={penalty!r} of type {type(penalty).__name__}"
            )
        if isinstance(l2, bool) or not isinstance(l2, numbers.Real) or not 0 <= l2 < float("inf"):
            raise ValueError(
                "Invalid value for argument `l2`. Expected a finite float >= 0. "
                f"Received: l2={l2!r}"
            )
        self.penalty = penalty
        self.l2 = float(l2)

    @property
    def strength(self):
        """The strength of the DeepHoyer term (that of `penalty`)."""
        return self.penalty.strength

    @strength.setter
    def strength(self, value):
        self.penalty.strength = value

    def measure(self, x):
        return self.penalty.measure(x)

    def __call__(self, x):
        value = self.penalty(x)
        if self.l2:
            x = tf.cast(tf.convert_to_tensor(x), tf.float32)
            value = value + self.l2 * tf.reduce_sum(tf.square(x))
        return value

    def strength_variables(self):
        return self.penalty.strength_variables()

    def with_layout(self, layout):
        """A copy for another kernel layout, sharing the strength variables."""
        if not hasattr(self.penalty, "with_layout"):
            return self
        adapted = self.penalty.with_layout(layout)
        return self if adapted is self.penalty else WithL2(adapted, self.l2)

    def get_config(self):
        return {"penalty": keras.saving.serialize_keras_object(self.penalty), "l2": self.l2}

    @classmethod
    def from_config(cls, config):
        return cls(keras.saving.deserialize_keras_object(config["penalty"]), config["l2"])


def kernel_layers(model, types=("Conv2D", "Dense")):
    """The layers of `model` (nested models expanded) whose class name is in `types`."""
    found = []
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.__class__.__name__ not in types:
            found.extend(kernel_layers(layer, types))
        elif layer.__class__.__name__ in types:
            found.append(layer)
    return found


def layer_thresholds(model, conv_threshold, fc_std_ratio=None, fc_threshold=None):
    """Absolute pruning threshold per layer: ``{layer name: t}``.

    ``t = conv_threshold`` for Conv2D layers; for Dense layers
    ``t = fc_std_ratio * std(W)`` (population std of the kernel, as
    `deephoyer_tf.prune` computes it) or ``t = fc_threshold``.

    Example: a Dense kernel with std 0.02 and ``fc_std_ratio=0.5`` gets
    ``t = 0.01``.
    """
    if (fc_std_ratio is None) == (fc_threshold is None):
        raise ValueError(
            "Exactly one of the arguments `fc_std_ratio` and `fc_threshold` must "
            f"be given. Received: fc_std_ratio={fc_std_ratio!r}, "
            f"fc_threshold={fc_threshold!r}"
        )
    thresholds = {}
    for layer in kernel_layers(model):
        if layer.__class__.__name__ == "Conv2D":
            thresholds[layer.name] = float(conv_threshold)
        elif fc_std_ratio is not None:
            kernel = np.asarray(layer.kernel.numpy())
            thresholds[layer.name] = float(fc_std_ratio) * float(np.std(kernel))
        else:
            thresholds[layer.name] = float(fc_threshold)
    return thresholds


class LayerRulePruning(deephoyer_tf.ThresholdPruning):
    """`ThresholdPruning` with one rule for Conv2D and another for Dense layers.

    At the start of epoch `at_epoch` the thresholds are computed from the
    weights of that moment (`layer_thresholds`) and handed to
    `ThresholdPruning` as a per-layer dict of absolute thresholds; the rest
    (penalties off, zeros held, resuming after `at_epoch` without pruning
    again) is `ThresholdPruning`'s.

    Args:
        at_epoch: the (0-based) epoch at whose start to prune.
        conv_threshold: absolute threshold for Conv2D kernels (1e-4).
        fc_std_ratio: threshold in units of the kernel's std for Dense
            kernels (0.5 for AlexNet), or
        fc_threshold: an absolute one (1e-4 for ResNet-50's classifier).
        verbose: 1 prints the sparsity report when pruning.
    """

    def __init__(self, at_epoch, conv_threshold, fc_std_ratio=None, fc_threshold=None, verbose=1):
        super().__init__(at_epoch, threshold={}, verbose=verbose)
        if (fc_std_ratio is None) == (fc_threshold is None):
            raise ValueError(
                "Exactly one of the arguments `fc_std_ratio` and `fc_threshold` "
                f"must be given. Received: fc_std_ratio={fc_std_ratio!r}, "
                f"fc_threshold={fc_threshold!r}"
            )
        self.conv_threshold = conv_threshold
        self.fc_std_ratio = fc_std_ratio
        self.fc_threshold = fc_threshold

    def on_epoch_begin(self, epoch, logs=None):
        if not self.active and epoch == self.at_epoch:
            self.threshold = layer_thresholds(
                self.model, self.conv_threshold, self.fc_std_ratio, self.fc_threshold
            )
        super().on_epoch_begin(epoch, logs)
