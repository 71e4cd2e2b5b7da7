"""`fix_zeros_tfmot`'s machinery: TFMOT's `PruneLowMagnitude` with frozen masks.

Importing this module imports `tensorflow_model_optimization`: only the
tf_keras code path imports it, lazily. TFMOT's import sets
``TF_USE_LEGACY_KERAS=1``; this module puts the variable back as it was (TFMOT
itself keeps using tf_keras). Everything TFMOT-specific lives here.
"""

import importlib
import os

import tensorflow as tf
import tf_keras

from deephoyer_tf._internal import flavours
from deephoyer_tf.sparsity import kernels as kernels_lib
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import registry

_SCHEDULE_NAME = "FrozenZerosSchedule"


def _import_keeping_env(name="tensorflow_model_optimization"):
    """Imports module `name`, then puts ``TF_USE_LEGACY_KERAS`` back as it was."""
    previous = os.environ.get("TF_USE_LEGACY_KERAS")
    try:
        return importlib.import_module(name)
    finally:
        if previous is None:
            os.environ.pop("TF_USE_LEGACY_KERAS", None)
        else:
            os.environ["TF_USE_LEGACY_KERAS"] = previous


tfmot = _import_keeping_env()


class FrozenZerosSchedule(tfmot.sparsity.keras.PruningSchedule):
    """A TFMOT pruning schedule that never recomputes the masks.

    ``schedule(step) = (should_prune=False, sparsity=0)`` at every step, so the
    masks of `PruneLowMagnitude` keep the pattern `fix_zeros_tfmot` gave them: the
    nonzero weights of the model when it was called. Registered with tf_keras
    under its class name, so wrapped models load under
    ``tfmot.sparsity.keras.prune_scope()`` (after ``import deephoyer_tf``).
    """

    def __call__(self, step):
        return tf.constant(False), tf.constant(0.0, dtype=tf.float32)

    def get_config(self):
        return {"class_name": _SCHEDULE_NAME, "config": {}}


def wrap(model, types):
    """`model` with its layers of `types` wrapped, masks set from the zeros."""
    if not flavours.is_graph_model(model):
        raise ValueError(
            f"fix_zeros_tfmot() cannot wrap tf_keras model {model.name!r} of type "
            f"{type(model).__name__}: TFMOT's PruneLowMagnitude supports "
            "Sequential and functional models only."
        )
    # Validates the model (built, supported layers) before cloning.
    kernels_lib.model_kernels(model, types)
    schedule = FrozenZerosSchedule()

    def wrap_layer(layer):
        if isinstance(layer, tf_keras.Model):
            return tf_keras.models.clone_model(layer, clone_function=wrap_layer)
        if registry.is_tfmot_wrapper(layer):
            return layer
        name = registry.layer_type(layer)
        if name is None or name not in types:
            return layer
        return tfmot.sparsity.keras.prune_low_magnitude(
            layer, pruning_schedule=schedule
        )

    wrapped = tf_keras.models.clone_model(model, clone_function=wrap_layer)
    zero_mask.hold_zeros(wrapped, types)
    return wrapped


def strip(model):
    """`tfmot.sparsity.keras.strip_pruning` of `model`."""
    return tfmot.sparsity.keras.strip_pruning(model)


def register():
    """Registers `FrozenZerosSchedule` with tf_keras under its class name."""
    objects = tf_keras.utils.get_custom_objects()
    objects[_SCHEDULE_NAME] = FrozenZerosSchedule
    objects[f"deephoyer_tf>{_SCHEDULE_NAME}"] = FrozenZerosSchedule


register()
