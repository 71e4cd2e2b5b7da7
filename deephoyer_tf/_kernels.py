"""Private helpers shared by `prune`, `fix_zeros` and `ThresholdPruning`.

* Which kernels of a model the element-wise pipeline acts on, with TFMOT
  `PruneLowMagnitude` wrappers seen through (the wrapped layer's kernel).
* Reading and setting the `constraint` of a variable of either flavour: a Keras 3
  `keras.Variable` has a public setter; a tf_keras kernel is a `tf.Variable`,
  possibly inside an `AutoCastVariable` (mixed precision) and/or a distributed
  variable (one component per replica), whose constraint is read from
  ``_constraint`` of the (primary) component by every optimizer.
* Forcing the next `fit` to retrace its train step (constraints are Python,
  read when the step is traced).
"""

import dataclasses

import keras
import tensorflow as tf

from deephoyer_tf import _layers
from deephoyer_tf import _models

# The name of TFMOT's pruning wrapper class (matched by name: TFMOT must not be
# imported outside the tf_keras path).
TFMOT_WRAPPER = "PruneLowMagnitude"


def check_layer_types(layer_types):
    """`layer_types` validated, as a tuple (default: the registry's DEFAULT_TYPES)."""
    if layer_types is None:
        return tuple(_layers.DEFAULT_TYPES)
    if isinstance(layer_types, str):
        layer_types = (layer_types,)
    types = tuple(layer_types)
    unknown = [t for t in types if t not in _layers.supported_types()]
    if unknown:
        raise ValueError(
            "Invalid value for argument `layer_types`. Expected names among "
            f"{_layers.supported_types()}. Received: {unknown}"
        )
    return types


def is_tfmot_wrapper(layer):
    return type(layer).__name__ == TFMOT_WRAPPER and hasattr(layer, "layer")


@dataclasses.dataclass
class KernelRef:
    """One kernel the pipeline acts on.

    Attributes:
        layer: the layer owning the kernel (the wrapped layer for a TFMOT wrapper).
        wrapper: the TFMOT `PruneLowMagnitude` wrapper around `layer`, or None.
        variable: the kernel variable.
    """

    layer: object
    wrapper: object
    variable: object

    def names(self):
        """Names by which a per-layer dict may refer to this kernel's layer."""
        names = {self.layer.name}
        if self.wrapper is not None:
            names.add(self.wrapper.name)
        return names

    def tfmot_mask(self):
        """The TFMOT mask variable of this kernel, or None."""
        if self.wrapper is None:
            return None
        for weight, mask, _ in getattr(self.wrapper, "pruning_vars", []):
            if weight is self.variable:
                return mask
        return None


def model_kernels(model, types):
    """The `KernelRef`s of the kernels of `types` in `model`, in layer order.

    Raises:
        ValueError: a layer of a selected type is not built.
    """
    refs = []
    for layer in _models.flat_layers(model):
        wrapper = None
        if is_tfmot_wrapper(layer):
            wrapper, layer = layer, layer.layer
        name = _layers.layer_type(layer)
        if name is None or name not in types:
            continue
        specs = _layers.kernel_specs(layer)
        found = list(_layers.kernels(layer, types))
        if len(found) < len(specs):
            raise ValueError(
                f"Layer {layer.name!r} of type {name} is not built, so its "
                "kernel does not exist yet. Build the model first (give it an "
                "Input or call it on data)."
            )
        for _, variable in found:
            refs.append(KernelRef(layer, wrapper, variable))
    return refs


def _components(variable):
    """The `tf.Variable`s that hold the `_constraint` of a tf_keras variable."""
    inner = getattr(variable, "_variable", None)  # AutoCastVariable
    if inner is not None and not isinstance(variable, keras.Variable):
        variable = inner
    if isinstance(variable, tf.distribute.DistributedValues):
        return list(variable.values)
    return [variable]


def set_constraint(variable, constraint):
    """Sets the constraint the optimizers apply to `variable` after each update."""
    if isinstance(variable, keras.Variable):
        variable.constraint = constraint
        return
    for component in _components(variable):
        component._constraint = constraint


def retrace(model):
    """Makes the next `fit` step (or the current one, mid-fit) retrace.

    Keras 3 and tf_keras both call ``model.train_function`` at each step, so a
    fresh function built by ``make_train_function(force=True)`` takes effect at
    the next batch, even from a callback inside `fit`.
    """
    if getattr(model, "train_function", None) is not None:
        model.make_train_function(force=True)


def strategy_scope(model):
    """The scope of the distribution strategy `model` was created under."""
    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    return strategy.scope()
