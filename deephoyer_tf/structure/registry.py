"""The layer registry: what deephoyer_tf knows about each Keras layer class.

Every part of the package that needs to know something about a layer asks
this registry: `regularize`, `prune`, `fix_zeros`, `ThresholdPruning` and
`SparsitySummaries` (which weights are kernels, which regularizer attribute
holds their penalty), `sparsity_report` (how units flow through the layer,
along which kernel axes lie its input and output units), and `shrink` (how
to cut the layer when units are removed). Entries are keyed by layer class;
a subclass is handled as its nearest registered ancestor.

Kernel layouts (Keras stores kernels channels-last):

* ``"in_out"``: ``(k..., in, out)``: Dense ``(in, out)``, Conv1D/2D/3D,
  the pointwise kernel of SeparableConv, Embedding ``(vocab, dim)``;
* ``"out_in"``: ``(k..., out, in)``: Conv1D/2D/3DTranspose;
* ``"depthwise"``: ``(k..., in, multiplier)``: DepthwiseConv, the depthwise
  kernel of SeparableConv; output channel ``c * multiplier + m`` is the pair
  ``(c, m)``;
* ``"einsum"``: the axes come from the layer's einsum equation (an
  `EinsumDense` that is not a plain ``(in, out)`` projection, the projections
  of `MultiHeadAttention`; see `deephoyer_tf.structure.attention`). The
  element-wise pipeline handles it like any kernel; group regularizers get
  their groups from the equation.

Unit kinds (how the units, the last-axis entries, of a layer's inputs reach
those of its outputs):

* ``"kernel"``: through kernel weights (`KernelSpec`): unit ``i`` in reaches
  unit ``j`` out when a nonzero weight links them;
* ``"channelwise"``: unit ``c`` in is unit ``c`` out (activations, pooling,
  BatchNormalization...);
* ``"reshape"``: Flatten, Reshape: elements keep their row-major order;
* ``"merge"``: Add, Multiply...: unit ``c`` of every input is unit ``c`` out;
* ``"concat"``: Concatenate on the last axis;
* ``"elementwise"``: arithmetic written in a functional model (``x + 3.0``,
  ``x * y``): channel-wise with scalar constants, a merge of tensors, opaque
  with any other constant;
* ``"opaque"``: every unit out may depend on every unit in (kept whole by
  `shrink`).

Adding a layer type::

    deephoyer_tf.register_layer(
        MyDense,
        kernels=[deephoyer_tf.KernelSpec("kernel", "kernel_regularizer", "in_out")],
        cutter=my_cutter,            # optional: lets `shrink` cut it
    )
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from typing import Callable
from typing import Optional
from typing import Sequence
from typing import Tuple

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation

if TYPE_CHECKING:
    from typing import Any

    LayerLike = Any  # a Keras 3 or tf_keras layer

# Layouts whose unit axes are fixed (group regularizers accept these).
LAYOUTS = ("in_out", "out_in", "depthwise")
# Every layout a `KernelSpec` may have.
SPEC_LAYOUTS = LAYOUTS + ("einsum",)
KINDS = ("kernel", "channelwise", "reshape", "merge", "concat", "elementwise", "opaque")

# Axes kept (not reduced) when a kernel is split into groups of one unit each.
_UNIT_AXES = {
    "in_out": {"outputs": (-1,), "inputs": (-2,)},
    "out_in": {"outputs": (-2,), "inputs": (-1,)},
    "depthwise": {"outputs": (-2, -1), "inputs": (-2,)},
}

# TFMOT's pruning wrapper, matched by class name so that TFMOT is never imported.
TFMOT_WRAPPERS = ("PruneLowMagnitude",)


def keep_axes(layout: str, groups: str) -> Tuple[int, ...]:
    """Axes of a kernel of `layout` that index one unit of kind `groups`.

    ``groups`` is ``"outputs"`` or ``"inputs"``; reducing over every other
    axis gives one group per output (input) unit.
    """
    if layout not in _UNIT_AXES:
        raise ValueError(
            f"Kernels of layout {layout!r} have no fixed unit axes: they come from the "
            "layer's equation (deephoyer_tf.structure.attention.einsum_axes)."
        )
    return _UNIT_AXES[layout][groups]


@dataclasses.dataclass(frozen=True)
class KernelSpec:
    """One kernel of a layer and the axes of its units.

    Args:
        attribute: the layer attribute holding the kernel variable, or a tuple
            of names tried in order (Keras 3 and tf_keras sometimes differ).
            A dotted name reads a sublayer's attribute
            (``"query_dense.kernel"``).
        regularizer_attribute: the constructor argument and attribute holding
            its regularizer (``"kernel_regularizer"``...).
        layout: one of `SPEC_LAYOUTS` (default ``"in_out"``).

    Attributes:
        input_axes, output_axes: the kernel axes (negative, from the end) that
            index its input and output units; a group of `GroupHoyerSquare`
            with ``groups="outputs"`` (``"inputs"``) is one index of these axes.
    """

    attribute: str | Tuple[str, ...]
    regularizer_attribute: str = "kernel_regularizer"
    layout: str = "in_out"

    def __post_init__(self) -> None:
        names = (self.attribute,) if isinstance(self.attribute, str) else tuple(self.attribute)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise TypeError(
                "Invalid type for argument `attribute`. Expected an attribute name "
                f"(str) or a tuple of names. Received: attribute={self.attribute!r}"
            )
        object.__setattr__(self, "attribute", names if len(names) > 1 else names[0])
        if not isinstance(self.regularizer_attribute, str) or not self.regularizer_attribute:
            raise TypeError(
                "Invalid type for argument `regularizer_attribute`. Expected a str. "
                f"Received: regularizer_attribute={self.regularizer_attribute!r}"
            )
        validation.check_choice(self.layout, "layout", SPEC_LAYOUTS)

    @property
    def attributes(self) -> Tuple[str, ...]:
        return (self.attribute,) if isinstance(self.attribute, str) else self.attribute

    @property
    def input_axes(self) -> Tuple[int, ...]:
        return keep_axes(self.layout, "inputs")

    @property
    def output_axes(self) -> Tuple[int, ...]:
        return keep_axes(self.layout, "outputs")

    def variable(self, layer: LayerLike) -> Any:
        """The kernel variable of `layer` (None when the layer is not built)."""
        for name in self.attributes:
            value = layer
            for part in name.split("."):
                value = getattr(value, part, None)
                if value is None:
                    break
            if value is not None:
                return value
        return None


@dataclasses.dataclass(frozen=True)
class LayerEntry:
    """What the registry holds for one layer class (see `register_layer`)."""

    layer_class: type
    kind: str
    kernels: Tuple[KernelSpec, ...] = ()
    cutter: Optional[Callable] = None
    fold: Optional[Callable] = None
    elementwise_default: bool = False
    applies: Optional[Callable] = None
    specs: Optional[Callable] = None
    flow: Optional[Callable] = None
    describe: Optional[Callable] = None

    def kernels_of(self, layer) -> Tuple[KernelSpec, ...]:
        """The `KernelSpec`s of one instance (`specs(layer)` when the entry has it)."""
        if self.specs is not None and not isinstance(layer, type):
            return tuple(self.specs(layer))
        return self.kernels

    @property
    def name(self) -> str:
        """The type name used by ``layer_types`` arguments: the class name."""
        return self.layer_class.__name__


_ENTRIES: dict = {}


def register_layer(
    layer_class: type,
    *,
    kernels: Sequence[KernelSpec] = (),
    kind: Optional[str] = None,
    cutter: Optional[Callable] = None,
    fold: Optional[Callable] = None,
    default: Optional[bool] = None,
    applies: Optional[Callable] = None,
    specs: Optional[Callable] = None,
    flow: Optional[Callable] = None,
    describe: Optional[Callable] = None,
) -> LayerEntry:
    """Registers a Keras layer class (either flavour) with deephoyer_tf.

    After this call `regularize`, `prune`, `fix_zeros`, `ThresholdPruning`,
    `SparsitySummaries` and `sparsity_report` handle the layer's `kernels`,
    and `shrink` cuts it with `cutter`. Subclasses of `layer_class` match too.
    Registering a class again replaces its entry.

    Args:
        layer_class: a subclass of `keras.layers.Layer` or
            `tf_keras.layers.Layer`.
        kernels: its kernels, `KernelSpec`s (for ``kind="kernel"``).
        kind: how units flow through it, one of `KINDS`; default ``"kernel"``
            when `kernels` are given.
        cutter: how `shrink` cuts it: ``cutter(layer, cut) -> (config,
            weights)``, the config and weights of the cut layer, given a
            `deephoyer_tf.structure.Cut` (the units kept of each input and
            output). None: `shrink` refuses every model holding the layer,
            with a `ValueError` naming it.
        fold: for a kernel layer, ``fold(layer, values, kernel) ->
            contributions``: how the constant values of removed input units
            reach its outputs (see `deephoyer_tf.structure.cutters.fold_dense`);
            None keeps such units instead of folding them into the bias.
        applies: ``applies(layer) -> bool``: the entry holds only for the
            instances it accepts (e.g. one TF function of tf_keras'
            `TFOpLambda`); others are handled as unregistered.
        default: whether the element-wise pipeline (`regularize`, `prune`,
            `fix_zeros`) acts on it when ``layer_types`` is not given; default
            True for a class with kernels.
        specs: ``specs(layer) -> [KernelSpec]``: the kernels of one instance,
            where they depend on its configuration (an `EinsumDense`'s
            equation, an attention layer's gate); `kernels` then describes
            the class (its widest configuration).
        flow: ``flow(layer) -> kind``: how units flow through one instance,
            where it differs from `kind` (``"opaque"`` for a kernel layer
            whose units cannot be followed axis by axis, such as
            `MultiHeadAttention`: `shrink` then keeps its inputs and outputs
            whole and calls `cutter` to cut inside it).
        describe: ``describe(op, sequence_length) -> LayerReport``: the
            `sparsity_report` row of a kernel layer whose `flow` is opaque.

    Returns:
        The new `LayerEntry`.

    Example::

        class Scaled(keras.layers.Dense): ...   # a subclass: already handled
        deephoyer_tf.register_layer(
            MyLayer, kernels=[deephoyer_tf.KernelSpec("w", "w_regularizer")])
    """
    if not isinstance(layer_class, type) or not _is_layer_class(layer_class):
        raise TypeError(
            "Invalid type for argument `layer_class`. Expected a Keras layer class "
            "(a subclass of keras.layers.Layer or tf_keras.layers.Layer). "
            f"Received: layer_class={layer_class!r}"
        )
    kernels = tuple(kernels)
    bad = [k for k in kernels if not isinstance(k, KernelSpec)]
    if bad:
        raise TypeError(
            "Invalid type for argument `kernels`. Expected a list of "
            f"deephoyer_tf.KernelSpec. Received: {bad[0]!r} of type {type(bad[0]).__name__}"
        )
    if kind is None:
        kind = "kernel" if kernels else None
    if kind is None:
        raise ValueError(
            f"register_layer({layer_class.__name__}): give `kernels` for a layer with "
            f"kernels, or `kind`, one of {list(KINDS)}, for one without."
        )
    validation.check_choice(kind, "kind", KINDS)
    if (kind == "kernel") != bool(kernels):
        raise ValueError(
            f"Invalid value for argument `kernels`. Expected at least one KernelSpec "
            f"exactly when kind='kernel'. Received: kind={kind!r}, {len(kernels)} kernels"
        )
    functions = (
        ("cutter", cutter), ("fold", fold), ("applies", applies), ("specs", specs),
        ("flow", flow), ("describe", describe),
    )
    for name, function in functions:
        if function is not None:
            validation.check_callable(function, name)
    if default is None:
        default = kind == "kernel"
    entry = LayerEntry(
        layer_class,
        kind,
        kernels,
        cutter,
        fold,
        validation.check_bool(default, "default"),
        applies,
        specs,
        flow,
        describe,
    )
    _ENTRIES[layer_class] = entry
    return entry


def unregister_layer(layer_class: type) -> None:
    """Removes the entry of `layer_class` (a no-op when it has none)."""
    _ENTRIES.pop(layer_class, None)


def _is_layer_class(cls):
    """A Keras layer class, or a Keras 3 operation (what ``x + 3.0`` becomes)."""
    for c in cls.__mro__:
        module = (getattr(c, "__module__", "") or "").split(".")[0]
        if c.__name__ in ("Layer", "Operation") and module in ("keras", "tf_keras"):
            return True
    return False


def unwrap(layer):
    """The layer inside a TFMOT `PruneLowMagnitude` wrapper, else `layer` itself."""
    while type(layer).__name__ in TFMOT_WRAPPERS and hasattr(layer, "layer"):
        layer = layer.layer
    return layer


def is_tfmot_wrapper(layer) -> bool:
    return type(layer).__name__ in TFMOT_WRAPPERS and hasattr(layer, "layer")


def entry_for(layer_or_class) -> Optional[LayerEntry]:
    """The entry `layer_or_class` is handled by (nearest registered ancestor), or None.

    TFMOT wrappers are seen through.
    """
    instance = None
    if isinstance(layer_or_class, type):
        cls = layer_or_class
    else:
        instance = unwrap(layer_or_class)
        cls = type(instance)
    flavours.is_tf_keras(cls)  # completes the tf_keras registrations if needed
    _first_sight(cls)
    for c in cls.__mro__:
        entry = _ENTRIES.get(c)
        if entry is not None:
            if entry.applies is not None and instance is not None and not entry.applies(instance):
                return None
            return entry
    return None


_FIRST_SIGHT = []  # [[package name, loader, done]]


def on_first_sight(package: str, loader: Callable[[], None]) -> None:
    """Runs ``loader()`` (once) when `entry_for` first meets a class from `package`.

    For registrations that need a package the user may not have (keras_hub's
    blocks): they are made when a model holds such a layer, never on import.
    """
    _FIRST_SIGHT.append([package, loader, False])


def _first_sight(cls):
    for item in _FIRST_SIGHT:
        package, loader, done = item
        if done:
            continue
        if any((getattr(c, "__module__", "") or "").split(".")[0] == package for c in cls.__mro__):
            item[2] = True
            loader()


def registered_entries() -> Tuple[LayerEntry, ...]:
    """Every entry, in registration order."""
    return tuple(_ENTRIES.values())


def layer_type(layer) -> Optional[str]:
    """The type name of `layer`'s kernel entry (``"Dense"``...), None without kernels."""
    entry = entry_for(layer)
    return entry.name if entry is not None and entry.kind == "kernel" else None


def kernel_specs(layer) -> Tuple[KernelSpec, ...]:
    """The `KernelSpec`s of `layer` (seen through a wrapper), ``()`` without kernels."""
    entry = entry_for(layer)
    return entry.kernels_of(unwrap(layer)) if entry is not None else ()


def kernel_variable(layer, spec: KernelSpec):
    """The variable `spec` names on `layer` (None if not built)."""
    return spec.variable(unwrap(layer))


def kernels(layer, types=None):
    """Yields ``(spec, variable)`` for each built kernel of `layer`.

    Args:
        layer: a Keras layer of either flavour.
        types: type names to accept; None accepts every kernel type.
    """
    name = layer_type(layer)
    if name is None or (types is not None and name not in types):
        return
    for spec in kernel_specs(layer):
        variable = kernel_variable(layer, spec)
        if variable is not None:
            yield spec, variable


def flow_kind(layer) -> Optional[str]:
    """How units flow through `layer` in the graph: its entry's `flow`, else its kind."""
    entry = entry_for(layer)
    if entry is None:
        return None
    if entry.flow is not None:
        return entry.flow(unwrap(layer))
    return entry.kind


def supported_types() -> list[str]:
    """The type names of the registered layers with kernels, sorted."""
    return sorted({e.name for e in _ENTRIES.values() if e.kind == "kernel"})


def default_types():
    """The type names the element-wise pipeline acts on by default, in registration order."""
    names = [e.name for e in _ENTRIES.values() if e.kind == "kernel" and e.elementwise_default]
    return list(dict.fromkeys(names))


def check_layer_types(layer_types):
    """`layer_types` validated, as a tuple (default: `default_types()`)."""
    if layer_types is None:
        return tuple(default_types())
    if isinstance(layer_types, str):
        layer_types = (layer_types,)
    try:
        types = tuple(layer_types)
    except TypeError:
        raise TypeError(
            "Invalid type for argument `layer_types`. Expected a list of layer type "
            f"names. Received: layer_types={layer_types!r}"
        ) from None
    unknown = [t for t in types if t not in supported_types()]
    if unknown:
        raise ValueError(
            "Invalid value for argument `layer_types`. Expected names among "
            f"{supported_types()}. Received: {unknown}"
        )
    return types


class UnhandledLayerWarning(UserWarning):
    """A model holds trainable kernels in layers deephoyer_tf does not handle."""


def kernel_layers(model):
    """Every layer of `model` with registered kernels, in layer order, nested ones included.

    Nested models are expanded; so are layers that are not kernel layers
    themselves but hold some (a custom transformer block holding a
    `MultiHeadAttention` and Dense layers, as keras_hub's encoders do): their
    kernel layers are found inside them. TFMOT wrappers are returned as they
    are (see `unwrap`).
    """
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if layer_type(layer) is not None:
            found.append(layer)
            return
        for sub in private_api.sublayers(unwrap(layer)):
            visit(sub)

    for layer in flavours.flat_layers(model):
        visit(layer)
    return found


def nested_kernel_layers(model):
    """The `kernel_layers` that sit inside another (non-model) layer of `model`."""
    top = {id(layer) for layer in flavours.flat_layers(model)}
    return [layer for layer in kernel_layers(model) if id(layer) not in top]


def unhandled_layers(model):
    """``[(layer name, class name, kernel shapes)]``: layers with kernels no entry covers.

    A layer is unhandled when it has no registry entry (nor a registered
    ancestor) and holds trainable weights of rank 2 or more (kernels; biases
    and normalization scales are rank 1) that are not weights of kernel layers
    found inside it (`kernel_layers`). Such kernels escape regularization,
    pruning, fixed zeros and the report.
    """
    covered = set()
    for layer in kernel_layers(model):
        covered.update(id(w) for w in unwrap(layer).weights)
    found = []
    for layer in flavours.flat_layers(model):
        if entry_for(layer) is not None:
            continue
        shapes = [
            tuple(int(d) for d in w.shape)
            for w in getattr(unwrap(layer), "trainable_weights", [])
            if len(w.shape) >= 2 and id(w) not in covered
        ]
        if shapes:
            found.append((layer.name, type(unwrap(layer)).__name__, shapes))
    return found


def check_unhandled(model, strict, where):
    """Warns (or raises, ``strict=True``) about `unhandled_layers` of `model`.

    Args:
        where: the calling function's name, for the message.
    """
    import warnings

    found = unhandled_layers(model)
    if not found:
        return
    listing = ", ".join(f"{name!r} ({cls}, kernels {shapes})" for name, cls, shapes in found)
    message = (
        f"{where}: model {model.name!r} has trainable kernels in layers deephoyer_tf does "
        f"not handle: {listing}. They are not regularized, pruned, held at zero or "
        "counted. Register their class with deephoyer_tf.register_layer(...) to include "
        "them."
    )
    if strict:
        raise ValueError(message + " (strict=True)")
    warnings.warn(message, UnhandledLayerWarning, stacklevel=3)


def weight_regularizer_attributes(layer):
    """The weight-regularizer attributes of `layer`'s registered kernels, and its bias's."""
    names = [spec.regularizer_attribute for spec in kernel_specs(layer)]
    if names:
        names.append("bias_regularizer")
    return list(dict.fromkeys(names))
