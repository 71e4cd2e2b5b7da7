"""Regularizers: the DeepHoyer measures, the Keras regularizer classes, `regularize`.

* `measures`: the math (Hoyer, Hoyer-Square, Group-HS, group lasso) as pure
  TensorFlow functions with closed-form gradients.
* `regularizers`: `HoyerSquare`, `Hoyer`, `GroupHoyerSquare`, `GroupLasso`,
  Keras regularizers for both flavours.
* `regularize_model`: `regularize`, attach a regularizer to the kernels of an existing model.
* `strengths`: the strength variables of a model's regularizers.
* `channel_groups`: `ChannelGroups`, Group-HS per depthwise channel across
  the layers that read it (what `regularize` puts on depthwise kernels).
"""

from deephoyer_tf.regularizers.channel_groups import ChannelGroups
from deephoyer_tf.regularizers.regularize_model import regularize
from deephoyer_tf.regularizers.regularizers import DeepHoyerRegularizer
from deephoyer_tf.regularizers.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers.regularizers import GroupLasso
from deephoyer_tf.regularizers.regularizers import Hoyer
from deephoyer_tf.regularizers.regularizers import HoyerSquare
from deephoyer_tf.regularizers.strengths import strength_variables

__all__ = [
    "ChannelGroups",
    "DeepHoyerRegularizer",
    "GroupHoyerSquare",
    "GroupLasso",
    "Hoyer",
    "HoyerSquare",
    "regularize",
    "strength_variables",
]
