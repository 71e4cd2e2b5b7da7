"""Making one regularizer object serve Keras 3 and tf_keras.

Keras 3 and tf_keras keep separate base classes and separate registries of
serializable objects. The regularizer classes subclass both base classes (when
tf_keras is installed) and are registered with both, so that models of either
flavour that use them save and load (`.keras`, and `.h5` in tf_keras) without
`custom_objects`. Importing tf_keras does not import TFMOT nor set
`TF_USE_LEGACY_KERAS`.
"""

import importlib.util

import keras


def tf_keras_installed():
    return importlib.util.find_spec("tf_keras") is not None


def regularizer_bases():
    """Base classes of the DeepHoyer regularizers: Keras 3's, then tf_keras's."""
    if not tf_keras_installed():
        return (keras.regularizers.Regularizer,)
    import tf_keras

    return (keras.regularizers.Regularizer, tf_keras.regularizers.Regularizer)


def register_with_tf_keras(classes):
    """Registers `classes` with tf_keras under ``deephoyer_tf>Name``, alias and name.

    Returns False (and does nothing) when tf_keras is not installed.
    """
    if not tf_keras_installed():
        return False
    import tf_keras

    custom_objects = tf_keras.utils.get_custom_objects()
    for cls in classes:
        tf_keras.utils.register_keras_serializable(package="deephoyer_tf")(cls)
        custom_objects.setdefault(cls.alias, cls)
        # tf_keras's legacy (.h5) loader looks nested objects up by their bare
        # `class_name`, not by the registered ``deephoyer_tf>Name``.
        custom_objects.setdefault(cls.__name__, cls)
    return True


class Callback(keras.callbacks.Callback):
    """A Keras 3 callback that tf_keras's `fit` accepts too.

    tf_keras's `CallbackList` asks each callback whether it implements the
    train/test/predict batch hooks (``_implements_*_batch_hooks``), methods
    Keras 3 callbacks lack. This base answers from the methods the subclass
    overrides, so one class serves both flavours.
    """

    def _overrides(self, *names):
        base = keras.callbacks.Callback
        return any(getattr(type(self), name) is not getattr(base, name) for name in names)

    def _implements_train_batch_hooks(self):
        return self._overrides(
            "on_batch_begin", "on_batch_end", "on_train_batch_begin", "on_train_batch_end"
        )

    def _implements_test_batch_hooks(self):
        return self._overrides("on_test_batch_begin", "on_test_batch_end")

    def _implements_predict_batch_hooks(self):
        return self._overrides("on_predict_batch_begin", "on_predict_batch_end")
