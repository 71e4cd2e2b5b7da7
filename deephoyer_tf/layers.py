"""`GatherUnits`: the small layer `shrink` inserts to drop removed input units.

``GatherUnits(indices)(x) = x[..., indices]``: it keeps the units (last-axis
entries) listed in `indices`, in that order. `deephoyer_tf.shrink` puts one in
front of a layer whose input holds units the layer no longer reads (the dead
pixels before the first Dense layer of LeNet-300-100, for example), so that
the shrunk model keeps the original input signature.

There is one class per Keras flavour (Keras 3 layers and tf_keras layers
cannot be mixed); both are registered as ``deephoyer_tf>GatherUnits``, so
models using them save and load (`.keras`) once `deephoyer_tf` is imported.
"""

import numbers

import keras

from deephoyer_tf import _compat


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

    def __init__(self, indices, **kwargs):
        super().__init__(**kwargs)
        self.indices = _check_indices(indices)

    def call(self, inputs):
        return keras.ops.take(inputs, self.indices, axis=-1)

    def compute_output_shape(self, input_shape):
        return _output_shape(input_shape, self.indices)

    def get_config(self):
        return {**super().get_config(), "indices": list(self.indices)}


def _tf_keras_class():
    import tensorflow as tf
    import tf_keras

    class GatherUnits(tf_keras.layers.Layer):  # noqa: F811 (the tf_keras face)
        __doc__ = globals()["GatherUnits"].__doc__

        def __init__(self, indices, **kwargs):
            super().__init__(**kwargs)
            self.indices = _check_indices(indices)

        def call(self, inputs):
            return tf.gather(inputs, self.indices, axis=-1)

        def compute_output_shape(self, input_shape):
            return tf.TensorShape(_output_shape(tf.TensorShape(input_shape).as_list(), self.indices))

        def get_config(self):
            return {**super().get_config(), "indices": list(self.indices)}

    GatherUnits.__module__ = __name__
    GatherUnits.__qualname__ = "TfKerasGatherUnits"
    tf_keras.utils.register_keras_serializable(package="deephoyer_tf")(GatherUnits)
    return GatherUnits


TfKerasGatherUnits = _tf_keras_class() if _compat.tf_keras_installed() else None


def gather_units_class(module):
    """The `GatherUnits` class of the Keras package `module` (keras or tf_keras)."""
    if module is keras:
        return GatherUnits
    return TfKerasGatherUnits
