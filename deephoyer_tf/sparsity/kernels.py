"""The kernels the element-wise pipeline (`prune`, `fix_zeros`, `ThresholdPruning`) acts on.

* `model_kernels`: the kernels of the selected layer types of a model, as
  `KernelRef`s, with TFMOT `PruneLowMagnitude` wrappers seen through (the
  wrapped layer's kernel, and the wrapper's own mask).
* `retrace` and `strategy_scope`: the model-level effects of changing a
  kernel's constraint (constraints are Python, read when the step is traced).
"""

from __future__ import annotations

import contextlib
import dataclasses

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import registry


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
        for weight, mask, _ in private_api.tfmot_pruning_vars(self.wrapper):
            if weight is self.variable:
                return mask
        return None


def check_layer_dict(value, refs, types, argument):
    """Raises a ValueError naming the keys of per-layer dict `value` that match no layer of `refs`.

    Args:
        value: a dict keyed by layer names.
        refs: the `KernelRef`s of the model (`model_kernels(model, types)`).
        types: the layer types selected (for the message).
        argument: the argument's name (for the message).
    """
    known = set().union(*(ref.names() for ref in refs)) if refs else set()
    unknown = sorted(set(value) - known)
    if unknown:
        raise ValueError(
            f"Invalid value for argument `{argument}`. Expected a dict keyed "
            f"by names of layers of types {list(types)} in the model: "
            f"{sorted({ref.layer.name for ref in refs})}. Received unknown "
            f"names: {unknown}"
        )


def model_kernels(model, types):
    """The `KernelRef`s of the kernels of `types` in `model`, in layer order.

    Kernel layers nested inside other layers (a custom transformer block) are
    included (`deephoyer_tf.structure.registry.kernel_layers`).

    Raises:
        ValueError: a layer of a selected type is not built.
    """
    refs = []
    for layer in registry.kernel_layers(model):
        wrapper = None
        if registry.is_tfmot_wrapper(layer):
            wrapper, layer = layer, layer.layer
        name = registry.layer_type(layer)
        if name is None or name not in types:
            continue
        specs = registry.kernel_specs(layer)
        found = list(registry.kernels(layer, types))
        if len(found) < len(specs):
            raise ValueError(
                f"Layer {layer.name!r} of type {name} is not built, so its "
                "kernel does not exist yet. Build the model first (give it an "
                "Input or call it on data)."
            )
        for _, variable in found:
            refs.append(KernelRef(layer, wrapper, variable))
    return refs


def retrace(model):
    """Makes the next `fit` step (or the current one, mid-fit) retrace.

    Keras 3 and tf_keras both call ``model.train_function`` at each step, so a
    fresh function built by ``make_train_function(force=True)`` takes effect at
    the next batch, even from a callback inside `fit`
    (`deephoyer_tf._internal.backend.retrace`).
    """
    backend.retrace(model)


def strategy_scope(model):
    """The scope of the distribution strategy `model` was created under.

    A `tf.distribute` strategy on TensorFlow (tf_keras included); nothing on
    JAX and PyTorch, whose variables take their layout from the
    `keras.distribution` in force where they are created.
    """
    if not backend.is_tensorflow() and not flavours.is_tf_keras(model):
        return contextlib.nullcontext()
    import tensorflow as tf

    strategy = getattr(model, "distribute_strategy", None)
    if strategy is None:
        strategy = tf.distribute.get_strategy()
    return strategy.scope()
