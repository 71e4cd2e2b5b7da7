"""Registration of the regularizers with tf_keras, when tf_keras is installed.

Keras 3 and tf_keras keep separate registries of serializable objects. The
regularizer classes subclass `keras.regularizers.Regularizer` (Keras 3) and are
plain callables to tf_keras; registering them with tf_keras too lets tf_keras
models that use them save and load (`.keras` and `.h5`) without
`custom_objects`. Importing tf_keras does not import TFMOT nor set
`TF_USE_LEGACY_KERAS`.
"""

import importlib.util


def register_with_tf_keras(classes):
    """Registers `classes` under ``deephoyer_tf>Name`` and their aliases in tf_keras.

    Returns False (and does nothing) when tf_keras is not installed.
    """
    if importlib.util.find_spec("tf_keras") is None:
        return False
    import tf_keras

    custom_objects = tf_keras.utils.get_custom_objects()
    for cls in classes:
        tf_keras.utils.register_keras_serializable(package="deephoyer_tf")(cls)
        custom_objects.setdefault(cls.alias, cls)
    return True
