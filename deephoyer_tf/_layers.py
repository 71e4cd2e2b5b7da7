"""Registry from Keras layer type to the kernels it owns and their layouts.

Every part of deephoyer_tf that needs to know "which weight of this layer is its
kernel, and along which axes lie its input and output units" asks this module.
Adding a layer type means adding one entry to `_REGISTRY`.

Layouts (Keras stores kernels channels-last):

* ``"in_out"``: ``(k..., in, out)``: Dense ``(in, out)``, Conv1D/2D/3D,
  the pointwise kernel of SeparableConv, Embedding ``(vocab, dim)``.
* ``"out_in"``: ``(k..., out, in)``: Conv1D/2D/3DTranspose.
* ``"depthwise"``: ``(k..., in, multiplier)``: DepthwiseConv, the depthwise
  kernel of SeparableConv. Output channel ``c * multiplier + m`` is the pair
  ``(c, m)``.
"""

import dataclasses

LAYOUTS = ("in_out", "out_in", "depthwise")

# Axes kept (not reduced) when the kernel is split into groups of one unit each.
_KEEP_AXES = {
    "in_out": {"outputs": (-1,), "inputs": (-2,)},
    "out_in": {"outputs": (-2,), "inputs": (-1,)},
    "depthwise": {"outputs": (-2, -1), "inputs": (-2,)},
}


def keep_axes(layout, groups):
    """Axes of a kernel with `layout` that index one group of kind `groups`."""
    return _KEEP_AXES[layout][groups]


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One kernel of a layer.

    Attributes:
        attributes: names of the layer attribute holding the kernel variable,
            tried in order (Keras 3 and tf_keras sometimes differ).
        regularizer_attribute: the constructor argument / attribute holding its
            regularizer (``kernel_regularizer``, ``depthwise_regularizer``...).
        layout: one of `LAYOUTS`.
    """

    attributes: tuple
    regularizer_attribute: str
    layout: str


_DENSE_LIKE = (KernelSpec(("kernel",), "kernel_regularizer", "in_out"),)
_TRANSPOSE = (KernelSpec(("kernel",), "kernel_regularizer", "out_in"),)
_DEPTHWISE = (
    KernelSpec(("depthwise_kernel", "kernel"), "depthwise_regularizer", "depthwise"),
)
_SEPARABLE = (
    KernelSpec(("depthwise_kernel",), "depthwise_regularizer", "depthwise"),
    KernelSpec(("pointwise_kernel",), "pointwise_regularizer", "in_out"),
)
_EMBEDDING = (KernelSpec(("embeddings",), "embeddings_regularizer", "in_out"),)

_REGISTRY = {
    "Dense": _DENSE_LIKE,
    "Conv1D": _DENSE_LIKE,
    "Conv2D": _DENSE_LIKE,
    "Conv3D": _DENSE_LIKE,
    "Conv1DTranspose": _TRANSPOSE,
    "Conv2DTranspose": _TRANSPOSE,
    "Conv3DTranspose": _TRANSPOSE,
    "DepthwiseConv1D": _DEPTHWISE,
    "DepthwiseConv2D": _DEPTHWISE,
    "SeparableConv1D": _SEPARABLE,
    "SeparableConv2D": _SEPARABLE,
    "Embedding": _EMBEDDING,
}

# Layer types whose kernels the element-wise pipeline (regularize, prune,
# fix_zeros) handles by default: the weights the paper counts.
DEFAULT_TYPES = ("Dense", "Conv1D", "Conv2D", "Conv3D")


def _is_keras_class(cls):
    module = getattr(cls, "__module__", "") or ""
    return module.split(".")[0] in ("keras", "tf_keras")


def layer_type(layer):
    """Registry key of `layer`: the name of the first Keras class in its MRO.

    A user subclass of `Dense` is handled as a `Dense`.
    """
    for cls in type(layer).__mro__:
        if cls.__name__ in _REGISTRY and _is_keras_class(cls):
            return cls.__name__
    return None


def kernel_specs(layer):
    """The `KernelSpec`s of `layer`, or ``()`` for a layer without kernels."""
    name = layer_type(layer)
    return _REGISTRY.get(name, ())


def kernel_variable(layer, spec):
    """The variable `spec` names on `layer` (``None`` if not built)."""
    for attribute in spec.attributes:
        variable = getattr(layer, attribute, None)
        if variable is not None:
            return variable
    return None


def kernels(layer, types=None):
    """Yields ``(spec, variable)`` for each built kernel of `layer`.

    Args:
        layer: a Keras layer of either flavour.
        types: registry keys to accept; ``None`` accepts every registered type.
    """
    name = layer_type(layer)
    if name is None or (types is not None and name not in types):
        return
    for spec in _REGISTRY[name]:
        variable = kernel_variable(layer, spec)
        if variable is not None:
            yield spec, variable


def supported_types():
    """The registered layer type names, sorted."""
    return sorted(_REGISTRY)
