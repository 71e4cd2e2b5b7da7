"""`regularize`: attach a regularizer to the kernels of an existing model."""

from __future__ import annotations

import collections.abc
from typing import TYPE_CHECKING

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation
from deephoyer_tf.regularizers.channel_groups import ChannelGroups
from deephoyer_tf.regularizers.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers.regularizers import GroupLasso
from deephoyer_tf.regularizers.strengths import strength_variables
from deephoyer_tf.regularizers.transformer_groups import AxisGroups
from deephoyer_tf.regularizers.transformer_groups import HeadGroups
from deephoyer_tf.regularizers.transformer_groups import UnitGroups
from deephoyer_tf.structure import attention
from deephoyer_tf.structure import graph as graph_lib
from deephoyer_tf.structure import liveness
from deephoyer_tf.structure import patterns
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import Callable
    from typing import Mapping
    from typing import Sequence

    ModelLike = Any  # a Keras 3 or tf_keras model
    RegularizerLike = Callable[[Any], Any]  # a Keras regularizer (callable with get_config)


def _is_regularizer(obj):
    return callable(obj) and hasattr(obj, "get_config")


def regularize(
    model: ModelLike,
    regularizer: RegularizerLike | Mapping[str, RegularizerLike | None],
    *,
    bias_regularizer: RegularizerLike | None = None,
    layer_types: Sequence[str] | str | None = None,
    strict: bool = False,
    copy: bool = True,
) -> ModelLike:
    """Returns a copy of `model` whose kernels carry `regularizer` (or `model`, ``copy=False``).

    The copy has the same class, architecture and weights (so the same
    outputs); the original is untouched. It is made by the model's own
    mechanism (`copy_model`): a functional or Sequential model layer by layer
    (each layer by its ``from_config``; `Lambda` layers keep their function),
    any other class (a keras_hub `Backbone`) by ``cls.from_config`` of its
    config, so a regularized backbone is still that backbone, which its task
    models accept (``DistilBertTextClassifier(backbone=regularized, ...)``).
    The regularizers are then attached to the copy's existing kernels: no
    layer is rebuilt. The paper starts from a trained dense model; this is
    how to do that::

        dense = deephoyer_tf.load_model("dense.keras")  # safe_mode=True: no code from the file runs
        model = deephoyer_tf.regularize(dense, deephoyer_tf.HoyerSquare(1e-4))
        model.compile(...)  # the copy is not compiled
        model.fit(...)

    The same regularizer instance is attached to every selected layer, so
    setting ``regularizer.strength`` afterwards acts on all of them.

    Group regularizers (`GroupHoyerSquare`, `GroupLasso`) also go, by default,
    on DepthwiseConv and SeparableConv layers (MobileNet, EfficientNet): the
    depthwise kernel gets a `ChannelGroups` penalty, one group per channel
    spanning its depthwise filter and the input slices of the layers that read
    the channel (found in the layer graph, through BatchNormalization,
    activations, pooling, Add and squeeze-and-excitation's Multiply), so that
    a channel dies as a whole and `shrink` can remove it. Group
    regularizers are adapted to each layer's kernel layout (for example
    ``"out_in"`` for Conv2DTranspose) by copies that share its strength
    variables.

    Transformers. `EinsumDense` and `MultiHeadAttention` kernels (query, key,
    value, output) are regularized like any kernel: an element-wise
    regularizer goes on each of them. A group regularizer on a model with
    `MultiHeadAttention` layers groups what `shrink` can remove
    (`deephoyer_tf.regularizers.transformer_groups`): one group per attention
    head across its query, key, value and output slices (`HeadGroups`), and
    one group per hidden unit of each feed-forward block, across the column of
    the projection writing it and the row of the projection reading it
    (`UnitGroups`; found in the layer graph: a Dense or `EinsumDense`
    projection whose outputs reach, through channel-wise layers only, other
    such projections). Other `EinsumDense` equations get groups over their
    equation's output and input axes (`AxisGroups`).

    Kernel layers inside other layers (a custom block holding
    `MultiHeadAttention` and Dense layers, as keras_hub's encoders do) are
    regularized too: their regularizer is attached to the built kernels, so
    it is not saved with the model (call `regularize` again after loading).

    Layers holding trainable kernels that no registry entry covers are named
    in an `UnhandledLayerWarning` (a `ValueError` with ``strict=True``): their
    kernels are not regularized.

    Args:
        model: a built Sequential or functional model, Keras 3 or tf_keras.
            Nested Sequential/functional models are handled recursively.
        regularizer: a regularizer (any Keras regularizer, DeepHoyer or not),
            or a mapping from layer name to regularizer (layers not named, or
            mapped to None, keep their own).
        bias_regularizer: optional regularizer for the biases of the same
            layers. Biases are not regularized by default.
        layer_types: names of the layer types to regularize, default
            `deephoyer_tf.structure.registry.default_types()` (``Dense``,
            ``Conv1D/2D/3D`` and registered custom layers); any of
            `deephoyer_tf.supported_layer_types()` may be listed.
        strict: raise a `ValueError` instead of warning when the model has
            kernels in layers deephoyer_tf does not handle.
        copy: True (default): regularize a copy. False: attach the
            regularizers to `model` itself and return it (for a model whose
            config does not round-trip; a compiled model must then be
            compiled again for its losses to be traced anew).

    Returns:
        A new, uncompiled model (``copy=False``: `model`).

    Raises:
        TypeError: `model` is not a Keras model, or `regularizer` is not one.
        ValueError: `model` is subclassed or not built, or `layer_types` names
            an unsupported type, or `regularizer` is a dict with names of no
            selected layer (the message lists the known names), or
            (``strict=True``) it has unhandled kernels, or the copy cannot be
            made (the message names the layer and suggests ``copy=False``).
    """
    flavours.check_model(model)
    validation.check_bool(strict, "strict")
    validation.check_bool(copy, "copy")
    if isinstance(regularizer, collections.abc.Mapping):
        chooser = dict(regularizer)
        bad = [v for v in chooser.values() if v is not None and not _is_regularizer(v)]
    else:
        chooser = regularizer
        bad = [] if _is_regularizer(regularizer) else [regularizer]
    if bad:
        raise TypeError(
            "Invalid type for argument `regularizer`. Expected a Keras "
            "regularizer (callable with `get_config`) or a mapping from layer "
            f"name to regularizer. Received: {bad[0]!r} of type {type(bad[0]).__name__}"
        )
    if bias_regularizer is not None and not _is_regularizer(bias_regularizer):
        raise TypeError(
            "Invalid type for argument `bias_regularizer`. Expected a Keras "
            f"regularizer or None. Received: bias_regularizer={bias_regularizer!r}"
        )
    types = registry.check_layer_types(layer_types)
    if layer_types is None and _has_group_regularizer(chooser):
        # Group penalties also fit depthwise and separable kernels, channel by channel.
        types = types + tuple(t for t in CHANNEL_GROUP_TYPES if t not in types)
    _check_graph_model(model)
    if isinstance(chooser, dict):
        from deephoyer_tf.sparsity import kernels as kernels_lib

        kernels_lib.check_layer_dict(chooser, kernels_lib.model_kernels(model, types), types,
                                     "regularizer")
    registry.check_unhandled(model, strict, "regularize()")
    plan = _GroupPlan()
    if _has_group_regularizer(chooser):
        layers = flavours.flat_layers(model)
        if any(_depthwise_spec(layer) for layer in layers):
            plan.channel_readers = _channel_readers(model)
        if any(attention.is_attention(layer) for layer in layers):
            plan.unit_readers = _unit_readers(model)
            plan.covered = {r for names in plan.unit_readers.values() for r in names}
    target = copy_model(model) if copy else model
    links = []
    _regularize_top(target, chooser, bias_regularizer, types, plan, links)
    _regularize_nested(target, chooser, types, links)
    layers = {layer.name: layer for layer in flavours.flat_layers(target)}
    for coupled, resolve in links:
        coupled.link(resolve(layers))
    strength_variables(target)  # on JAX: the strengths become model state (a no-op elsewhere)
    return target


def _check_graph_model(model):
    if not flavours.is_graph_model(model):
        raise ValueError(
            f"regularize() cannot copy model {model.name!r} of type "
            f"{type(model).__name__}: it is a subclassed model, whose layer "
            "graph is not known. Pass the regularizer when you create its "
            "layers instead, e.g. Dense(..., kernel_regularizer="
            "deephoyer_tf.HoyerSquare(1e-4))."
        )
    if not model.built:
        raise ValueError(
            f"regularize() needs a built model; model {model.name!r} is not "
            "built. Give it an Input (or call it on data) first."
        )


def _choose(chooser, layer):
    return chooser.get(layer.name) if isinstance(chooser, dict) else chooser


def _attach(layer, variable, regularizer, attribute):
    """`regularizer` on built `variable` of `layer`, and in `layer`'s config (its `attribute`)."""
    private_api.attach_regularizer(layer, variable, regularizer)
    if attribute is not None:
        setattr(layer, attribute, regularizer)


def _regularize_top(model, chooser, bias_regularizer, types, plan, links):
    """The layers of `model` (nested models expanded) whose type is selected.

    The regularizer goes on their built kernels and into their config
    attribute (``kernel_regularizer``...), so that it is saved with the model.
    """
    for wrapped in flavours.flat_layers(model):
        if registry.layer_type(wrapped) not in types:
            continue
        regularizer = _choose(chooser, wrapped)
        if regularizer is None:
            continue
        layer = registry.unwrap(wrapped)
        if attention.is_attention(layer):
            if isinstance(regularizer, (GroupHoyerSquare, GroupLasso)):
                regularizer = _group_adapted(layer, None, regularizer, plan, links)
            for sub in attention.attention_projections(layer).values():
                _attach(sub, sub.kernel, regularizer, None)
                if bias_regularizer is not None and getattr(sub, "bias", None) is not None:
                    _attach(sub, sub.bias, bias_regularizer, None)
            # what MultiHeadAttention hands its projections (and saves)
            layer._kernel_regularizer = regularizer
            if bias_regularizer is not None:
                layer._bias_regularizer = bias_regularizer
            continue
        for spec, variable in registry.kernels(layer):
            adapted = regularizer
            if isinstance(regularizer, (GroupHoyerSquare, GroupLasso)):
                adapted = _group_adapted(layer, spec, regularizer, plan, links)
                if adapted is None:
                    continue
            _attach(layer, variable, adapted, spec.regularizer_attribute)
        if bias_regularizer is not None and getattr(layer, "bias", None) is not None:
            _attach(layer, layer.bias, bias_regularizer,
                    "bias_regularizer" if hasattr(layer, "bias_regularizer") else None)


def _regularize_nested(clone, chooser, types, links):
    """Kernel layers inside other layers of `clone` (keras_hub's encoder blocks...).

    Their owner builds them, so no config can carry the regularizer: it is
    attached to the built kernels (`private_api.attach_regularizer`), and is
    not saved with the model. Group regularizers group each one's own units
    (attention: per head).
    """
    grouped = _block_groups(clone, chooser)
    for layer in registry.nested_kernel_layers(clone):
        if registry.layer_type(layer) not in types:
            continue
        regularizer = _choose(chooser, layer)
        if regularizer is None:
            continue
        own = [grouped[id(v)] for _, v in registry.kernels(layer) if id(v) in grouped]
        if own:
            for penalty, (_, variable) in zip(own, registry.kernels(layer)):
                if penalty is not None:
                    private_api.attach_regularizer(registry.unwrap(layer), variable, penalty)
            continue
        if attention.is_attention(layer):
            if isinstance(regularizer, (GroupHoyerSquare, GroupLasso)):
                num_heads = private_api.attention_settings(layer)[0]
                regularizer = HeadGroups.from_group_regularizer(regularizer, num_heads)
                # linked now, to this very layer (nested names repeat across blocks)
                regularizer.link(_head_kernels(layer.name)({layer.name: layer}))
            for sub in attention.attention_projections(layer).values():
                private_api.attach_regularizer(sub, sub.kernel, regularizer)
            continue
        for spec, variable in registry.kernels(layer):
            adapted = regularizer
            if isinstance(regularizer, (GroupHoyerSquare, GroupLasso)):
                adapted = _group_adapted(layer, spec, regularizer, _GroupPlan(), links)
            private_api.attach_regularizer(registry.unwrap(layer), variable, adapted)


def _block_groups(model, chooser):
    """``{id(kernel variable): penalty or None}`` for keras_hub blocks under one group regularizer.

    A block's heads (query and output projections per query head, key and
    value per key/value head: `HeadGroups`) and feed-forward units (writers'
    columns and the reader's rows: `UnitGroups` on the first writer) are the
    groups `shrink` removes. None: the kernel is counted in another's group.
    """
    if not isinstance(chooser, (GroupHoyerSquare, GroupLasso)) or chooser.groups == "blocks":
        return {}
    found = {}
    for layer in flavours.flat_layers(model):
        entry = registry.entry_for(layer)
        group_kernels = getattr(getattr(entry, "cutter", None), "group_kernels", None)
        if group_kernels is None:
            continue
        heads, units = group_kernels(layer)
        if not units:
            continue
        for kernels, count in heads:
            penalty = HeadGroups.from_group_regularizer(chooser, count)
            penalty.link(kernels)
            for variable, _ in kernels:
                found[id(variable)] = penalty
        penalty = UnitGroups.from_group_regularizer(chooser, (), axis=units[0][1])
        penalty.link(units[1:])
        found[id(units[0][0])] = penalty
        for variable, _ in units[1:]:
            found[id(variable)] = None
    return found


# --- copying a model ------------------------------------------------------------------


def _plain_model_classes(module):
    """The classes of plain functional and Sequential models of `module` (keras or tf_keras)."""
    classes = {module.Model, module.Sequential}
    try:
        if module.__name__ == "keras":
            from keras.src.models.functional import Functional
        else:
            from tf_keras.src.engine.functional import Functional
        classes.add(Functional)
    except ImportError:  # pragma: no cover (private path moved)
        pass
    return classes


def copy_model(model):
    """A copy of graph model `model`, same class, same weights, its own variables.

    A plain functional or Sequential model is copied layer by layer
    (`keras.models.clone_model`), each layer by its own ``from_config``
    (nested models recursively; a `Lambda` layer keeps its Python function,
    which is never serialized). A model of its own class (a keras_hub
    `Backbone`...) is copied by that class: ``cls.from_config(get_config())``,
    so the copy is still a `Backbone` its task models accept.

    Raises:
        ValueError: the copy cannot be made (a layer or model whose config does
            not round-trip); the message names it and suggests ``copy=False``.
    """
    module = flavours.keras_module(model)
    cls = type(model)
    if cls in _plain_model_classes(module):
        clone = module.models.clone_model(model, clone_function=_copy_layer)
    else:
        try:
            clone = cls.from_config(model.get_config())
        except Exception as error:  # noqa: BLE001 - any failure of the model's own config
            raise ValueError(
                f"regularize() cannot copy model {model.name!r} of class {cls.__name__}: "
                f"{cls.__name__}.from_config(model.get_config()) fails ({type(error).__name__}: "
                f"{_one_line(error)}). Pass copy=False to regularize the model in place."
            ) from error
    _copy_weights(model, clone)
    return clone


def _one_line(error):
    return " ".join(str(error).split())


def _copy_weights(model, clone):
    weights = model.get_weights()
    shapes = [tuple(w.shape) for w in clone.weights]
    if shapes != [tuple(w.shape) for w in weights]:
        raise ValueError(
            f"regularize() cannot copy model {model.name!r} of class {type(model).__name__}: "
            "the copy made from its config has other weights than the model "
            f"({len(shapes)} vs {len(weights)}). Pass copy=False to regularize the model in place."
        )
    clone.set_weights(weights)


def _copy_layer(layer):
    """A new layer like `layer` (clone_model's clone function); nested models by `copy_model`."""
    if flavours.is_model(layer):
        return copy_model(layer)
    if type(layer).__name__ == "Lambda" and callable(getattr(layer, "function", None)):
        # its function is live Python: handed over as it is, not through (unsafe) bytecode
        return type(layer)(
            layer.function,
            output_shape=getattr(layer, "_output_shape", None),
            mask=getattr(layer, "mask", None),
            arguments=dict(getattr(layer, "arguments", None) or {}),
            name=layer.name,
        )
    try:
        return type(layer).from_config(layer.get_config())
    except Exception as error:  # noqa: BLE001 - any failure of the layer's own config
        raise ValueError(
            f"regularize() cannot copy layer {layer.name!r} of class {type(layer).__name__}: "
            f"{type(layer).__name__}.from_config(layer.get_config()) fails "
            f"({type(error).__name__}: {_one_line(error)}). Pass copy=False to regularize the model in "
            "place."
        ) from error


class _GroupPlan:
    """Where group regularizers span several kernels (found in the original's graph)."""

    def __init__(self):
        self.channel_readers = {}  # depthwise layer name -> reader names
        self.unit_readers = {}  # feed-forward writer name -> reader names (transformers)
        self.covered = set()  # readers whose inputs a writer's UnitGroups already groups


def _input_kernels(names):
    """Resolver: ``(kernel variable, input axis)`` of the layers `names` of the clone."""

    def resolve(layers):
        kernels = []
        for name in names:
            reader = layers[name]
            spec = registry.kernel_specs(reader)[-1]
            kernels.append((registry.kernel_variable(reader, spec), spec.input_axes[0]))
        return kernels

    return resolve


def _head_kernels(name):
    """Resolver: every projection kernel of attention layer `name` with its head axis."""

    def resolve(layers):
        projections = attention.attention_projections(layers[name])
        return [(sub.kernel, attention.HEAD_AXIS[role]) for role, sub in projections.items()]

    return resolve


def _projection(op):
    """A kernel op that is a Dense layer or an `EinsumDense` projection."""
    return op.kind == "kernel" and op.type in ("Dense", "EinsumDense")


def _unit_readers(model):
    """{feed-forward writer name: reader names}: projections whose units only projections read.

    The outputs of a Dense / `EinsumDense` projection are followed through
    channel-wise layers (activations, dropout); when every path ends at a
    Dense / `EinsumDense` projection (no merge, reshape or opaque layer, not a
    model output), each hidden unit is computed by the writer's column and read
    by the readers' rows alone: one removable unit.
    """
    found = {}
    graph = graph_lib.build_graph(model)
    if graph is None:
        return found
    outputs = set(map(id, graph.outputs))
    for op in graph.kernel_ops():
        if not _projection(op):
            continue
        names, frontier, ok = [], [op.outputs[0]], True
        while frontier and ok:
            tensor = frontier.pop()
            if id(tensor) in outputs or not tensor.consumers:
                ok = False
            for consumer in tensor.consumers:
                if consumer.kind == "channelwise":
                    frontier.extend(consumer.outputs)
                elif _projection(consumer):
                    names.append(registry.unwrap(consumer.layer).name)
                else:
                    ok = False
        if ok and names:
            found[registry.unwrap(op.layer).name] = names
    return found


# Layer types a group regularizer is attached to by default, besides the defaults.
CHANNEL_GROUP_TYPES = ("DepthwiseConv1D", "DepthwiseConv2D", "SeparableConv1D", "SeparableConv2D")


def _has_group_regularizer(chooser):
    values = chooser.values() if isinstance(chooser, dict) else [chooser]
    return any(isinstance(v, (GroupHoyerSquare, GroupLasso)) for v in values)


def _depthwise_spec(layer):
    specs = registry.kernel_specs(layer)
    return bool(specs) and specs[0].layout == "depthwise"


def _channel_readers(model):
    """{depthwise layer name: names of the kernel layers that read its channels}.

    The channels of a depthwise kernel (a DepthwiseConv, or the depthwise
    kernel of a SeparableConv, read by its own pointwise kernel) are followed
    through channel-wise layers and merges (BatchNormalization, activations,
    pooling, Add, squeeze-and-excitation's Multiply) to the kernel layers that
    read them. A path through a reshape, a concatenation or an opaque layer
    ends there: channels are not coupled across it.
    """
    found = {}
    graph = graph_lib.build_graph(model)
    if graph is None:
        return found
    for op in graph.kernel_ops():
        layer = registry.unwrap(op.layer)
        specs = registry.kernel_specs(layer)
        if len(specs) == 2 and specs[0].layout == "depthwise":  # SeparableConv
            found[layer.name] = [layer.name]
            continue
        if not graph_lib.is_channel_mapped(op):
            continue
        names, frontier, seen = [], [op.outputs[0]], set()
        while frontier:
            tensor = frontier.pop()
            for consumer in tensor.consumers:
                if id(consumer) in seen:
                    continue
                seen.add(id(consumer))
                if consumer.kind in ("channelwise", "merge"):
                    frontier.extend(consumer.outputs)
                elif consumer.kind == "kernel" and liveness.conv_groups(consumer.layer) == 1:
                    # (a grouped convolution's kernel does not index its input
                    # channels along one axis: it keeps its own groups)
                    names.append(registry.unwrap(consumer.layer).name)
        found[layer.name] = names
    return found


def _group_adapted(layer, spec, regularizer, plan, links):
    """The group regularizer for one kernel of `layer`, or None to leave it unregularized."""
    name = layer.name
    if regularizer.groups == "blocks":
        layout = None if spec is None else spec.layout
        if layout not in patterns.PATTERN_LAYOUTS:
            raise ValueError(
                f"groups='blocks' cannot group the kernels of layer {name!r} "
                f"({type(layer).__name__}, layout {layout!r}): blocks need one input and one "
                f"output axis (layouts {patterns.PATTERN_LAYOUTS}). Leave it out with `layer_types`."
            )
        return regularizer.with_layout(layout)
    if attention.is_attention(layer):
        num_heads = private_api.attention_settings(layer)[0]
        heads = HeadGroups.from_group_regularizer(regularizer, num_heads)
        links.append((heads, _head_kernels(name)))
        return heads
    if spec.layout == "depthwise":
        # one group per channel, across the layers that read it
        adapted = ChannelGroups.from_group_regularizer(regularizer, plan.channel_readers.get(name, ()))
        links.append((adapted, _input_kernels(adapted.readers)))
        return adapted
    if name in plan.unit_readers:
        units = UnitGroups.from_group_regularizer(regularizer, plan.unit_readers[name])
        links.append((units, _input_kernels(units.readers)))
        return units
    if name in plan.covered:
        return None  # its input units are grouped with the writer's outputs
    if spec.layout == "einsum":
        return AxisGroups.from_group_regularizer(regularizer, attention.einsum_axes(layer))
    adapted = regularizer.with_layout(spec.layout)
    groups = liveness.conv_groups(layer)
    if groups > 1 and spec.layout == "in_out":
        # a grouped convolution: an input unit's group is its slice in its own group
        adapted = adapted.with_conv_groups(groups)
    return adapted
