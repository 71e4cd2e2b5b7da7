"""Regularizers: the DeepHoyer measures, the Keras regularizer classes, `regularize`.

* `measures`: the math (Hoyer, Hoyer-Square, Group-HS, group lasso) as pure
  TensorFlow functions with closed-form gradients.
* `regularizers`: `HoyerSquare`, `Hoyer`, `GroupHoyerSquare`, `GroupLasso`,
  Keras regularizers for both flavours.
* `regularize_model`: `regularize`, attach a regularizer to the kernels of an existing model.
* `strengths`: the strength variables of a model's regularizers.
* `channel_groups`: `ChannelGroups`, Group-HS per depthwise channel across
  the layers that read it (what `regularize` puts on depthwise kernels).
* `transformer_groups`: `HeadGroups` (a group per attention head across its
  projections), `UnitGroups` (a feed-forward hidden unit across the kernels
  writing and reading it), `AxisGroups` (an `EinsumDense`'s equation axes).
"""

from deephoyer_tf.regularizers.channel_groups import ChannelGroups
from deephoyer_tf.regularizers.regularize_model import regularize
from deephoyer_tf.regularizers.regularizers import DeepHoyerRegularizer
from deephoyer_tf.regularizers.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers.regularizers import GroupLasso
from deephoyer_tf.regularizers.regularizers import Hoyer
from deephoyer_tf.regularizers.regularizers import HoyerSquare
from deephoyer_tf.regularizers.strengths import strength_variables
from deephoyer_tf.regularizers.transformer_groups import AxisGroups
from deephoyer_tf.regularizers.transformer_groups import HeadGroups
from deephoyer_tf.regularizers.transformer_groups import UnitGroups

__all__ = [
    "AxisGroups",
    "ChannelGroups",
    "DeepHoyerRegularizer",
    "GroupHoyerSquare",
    "GroupLasso",
    "Hoyer",
    "HoyerSquare",
    "HeadGroups",
    "UnitGroups",
    "regularize",
    "strength_variables",
]
