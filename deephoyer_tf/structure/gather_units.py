"""`GatherUnits`: the small layer `shrink` inserts to drop removed input units.

``GatherUnits(indices)(x) = x[..., indices]``: it keeps the units (last-axis
entries) listed in `indices`, in that order. `deephoyer_tf.shrink` puts one in
front of a layer whose input holds units the layer no longer reads (the dead
pixels before the first Dense layer of LeNet-300-100, for example), so that
the shrunk model keeps the original input signature.

There is one class per Keras flavour (Keras 3 layers and tf_keras layers
cannot be mixed); both are registered as ``deephoyer_tf>GatherUnits`` (the
tf_keras one when tf_keras is imported, see `_internal.tf_keras_faces`), so
models using them save and load (`.keras`) once `deephoyer_tf` is imported;
`gather_units_class(tf_keras)` is the tf_keras face.
"""

from __future__ import annotations

import numbers
from typing import TYPE_CHECKING

import keras

from deephoyer_tf._internal import tf_keras_faces

if TYPE_CHECKING:
    from typing import Any
    from typing import Sequence


def _check_indices(indices):
    if hasattr(indices, "tolist"):
        indices = indices.tolist()
    if (
        not isinstance(indices, (list, tuple))
        or not indices
        or any(isinstance(i, bool) or not isinstance(i, numbers.Integral) or i < 0 for i in indices)
    ):
        raise ValueError(
            "Invalid value for argument `indices`. Expected a non-empty list of "
            f"integers >= 0. Received: indices={indices!r}"
        )
    return [int(i) for i in indices]


def _output_shape(input_shape, indices):
    return tuple(input_shape)[:-1] + (len(indices),)


@keras.saving.register_keras_serializable(package="deephoyer_tf")
class GatherUnits(keras.layers.Layer):
    """Keeps the units `indices` of the last axis: ``y = x[..., indices]``.

    Args:
        indices: non-empty list of integers >= 0, the units kept, in order.

    Example: ``GatherUnits([0, 2])(np.array([[1., 2., 3.]]))`` is ``[[1., 3.]]``.
    """

    def __init__(self, indices: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.indices = _check_indices(indices)

    def call(self, inputs: Any) -> Any:
        return keras.ops.take(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape: Sequence[int | None]) -> tuple[int | None, ...]:
        return _output_shape(input_shape, self.indices)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "indices": list(self.indices)}


_TF_KERAS_CLASS = []


def _tf_keras_class(tf_keras):
    """Defines and registers the tf_keras face (run when tf_keras is imported)."""
    import tensorflow as tf

    class TfKerasGatherUnits(tf_keras.layers.Layer):
        __doc__ = GatherUnits.__doc__

        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = _check_indices(indices)

        def call(self, inputs):
            return tf.gather(inputs, self.indices, axis=-1)

        def compute_output_shape(self, input_shape):
            shape = tf.TensorShape(input_shape).as_list()
            return tf.TensorShape(_output_shape(shape, self.indices))

        def get_config(self):
            return {**super().get_config(), "indices": list(self.indices)}

    # Saved under the same registered name as the Keras 3 class.
    TfKerasGatherUnits.__name__ = "GatherUnits"
    TfKerasGatherUnits.__module__ = __name__
    tf_keras.utils.register_keras_serializable(package="deephoyer_tf")(TfKerasGatherUnits)
    _TF_KERAS_CLASS[:] = [TfKerasGatherUnits]


tf_keras_faces.on_tf_keras(_tf_keras_class)


def gather_units_class(module):
    """The `GatherUnits` class of the Keras package `module` (keras or tf_keras)."""
    if module is keras:
        return GatherUnits
    tf_keras_faces.ensure_registered()
    return _TF_KERAS_CLASS[0]
