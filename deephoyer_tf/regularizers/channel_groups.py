"""Channel groups across layers: a depthwise channel and what reads it, penalized as one group.

A channel of a depthwise convolution is computed by its depthwise filter
``D[..., c, :]`` and read by the input slice ``P[..., c, :]`` of the next
kernel layer (MobileNet's pointwise convolution; in a squeeze-and-excitation
block, the squeeze convolution and the projection both). The channel is
removable (`deephoyer_tf.shrink`) only when all of it is zero, so Group-HS
(and group lasso) on these networks groups per channel across the layers:

    g_c = concat(D[..., c, :], P_1[..., c*m : (c+1)*m, :], P_2[...], ...)
    G_H = (sum_c ||g_c||_2)^2 / sum_c ||g_c||_2^2          (paper, eq. 6)

`ChannelGroups` is that penalty, attached as the depthwise kernel's
regularizer by `deephoyer_tf.regularize` (which finds the readers in the
layer graph); it reads the readers' kernels itself, so their gradients flow
through it too. It shares its strength variable with the group regularizer
it was made from, so `StrengthSchedule` and `ThresholdPruning` act on it.

Saving: the readers are layers of one model, not serializable with the
regularizer. A loaded `ChannelGroups` holds the reader names only; until
`regularize` is called again (which links them), it penalizes the depthwise
kernel's channels alone and warns once.
"""

from __future__ import annotations

import warnings

from keras import ops

from deephoyer_tf._internal import backend
from deephoyer_tf.regularizers import measures
from deephoyer_tf.regularizers.regularizers import DeepHoyerRegularizer
from deephoyer_tf.regularizers.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers.regularizers import GroupLasso
from deephoyer_tf.regularizers.regularizers import _register

_KINDS = {"group_hs": GroupHoyerSquare, "group_lasso": GroupLasso}


def _channel_matrix(kernel, axis, channels):
    """``(channels, -1)``: the slices of `kernel` along `axis`, grouped ``m`` per channel."""
    rank = len(kernel.shape)
    axis = axis % rank
    order = [axis] + [a for a in range(rank) if a != axis]
    return ops.reshape(ops.transpose(kernel, order), (channels, -1))


@_register("channel_groups")
class ChannelGroups(DeepHoyerRegularizer):
    """Group-HS (or group lasso) per depthwise channel, spanning the layers that read it.

    Args:
        strength: float >= 0, the strength of the penalty.
        kind: ``"group_hs"`` (Group-HS, default) or ``"group_lasso"``.
        readers: names of the layers whose kernels read the channels (kept in
            the config; `link` gives the layers themselves).

    Example: a depthwise kernel with channels ``c = 0, 1`` and a reader whose
    input rows are ``[3, 4]`` and ``[0, 0]``, depthwise filters ``[0]`` and
    ``[0]``: the groups have norms 5 and 0, so the value is
    ``strength * 25 / 25 = strength``.
    """

    def __init__(self, strength=1e-4, kind="group_hs", readers=()):
        super().__init__(strength)
        if kind not in _KINDS:
            raise ValueError(
                "Invalid value for argument `kind`. Expected one of "
                f"{sorted(_KINDS)}. Received: kind={kind!r}"
            )
        self.kind = kind
        self.readers = [str(name) for name in readers]
        self._linked = None  # [(variable, input axis)] once linked
        self._warned = False

    @classmethod
    def from_group_regularizer(cls, regularizer, readers=()):
        """A `ChannelGroups` sharing the strength variable of `regularizer`."""
        kind = "group_lasso" if isinstance(regularizer, GroupLasso) else "group_hs"
        coupled = cls(regularizer.strength, kind, readers)
        coupled._strength = regularizer.strength_variables()[0]
        return coupled

    def link(self, kernels):
        """Links the readers' kernels: a list of ``(variable, input axis)``, one per reader."""
        self._linked = list(kernels)

    @property
    def linked(self) -> bool:
        return self._linked is not None

    def measure(self, x):
        x = ops.cast(backend.to_tensor(x), "float32")
        if len(x.shape) < 3:
            raise ValueError(
                f"ChannelGroups needs a depthwise kernel (k..., channels, multiplier); "
                f"received a tensor of shape {tuple(x.shape)}."
            )
        channels = int(x.shape[-2])
        parts = [_channel_matrix(x, -2, channels)]
        if self._linked is None:
            if self.readers and not self._warned:
                self._warned = True
                warnings.warn(
                    f"ChannelGroups is not linked to its readers {self.readers} (a loaded "
                    "model): it penalizes the depthwise channels alone. Call "
                    "deephoyer_tf.regularize(model, ...) again to couple them.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        else:
            for variable, axis in self._linked:
                value = ops.cast(backend.to_tensor(variable), "float32")
                parts.append(_channel_matrix(value, axis, channels))
        matrix = ops.concatenate(parts, axis=1)
        if self.kind == "group_lasso":
            return measures.group_lasso(matrix, (0,))
        return measures.group_hoyer_square(matrix, (0,))

    def get_config(self):
        return {"strength": self.strength, "kind": self.kind, "readers": list(self.readers)}
