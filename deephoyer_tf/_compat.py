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
