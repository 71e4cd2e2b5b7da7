"""`regularize`: attach a regularizer to the kernels of an existing model."""

from __future__ import annotations

import collections.abc
from typing import TYPE_CHECKING

from deephoyer_tf._internal import flavours
from deephoyer_tf.regularizers.channel_groups import ChannelGroups
from deephoyer_tf.regularizers.regularizers import GroupHoyerSquare
from deephoyer_tf.regularizers.regularizers import GroupLasso
from deephoyer_tf.structure import graph as graph_lib
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
) -> ModelLike:
    """Returns a copy of `model` whose kernels carry `regularizer`.

    The copy has the same architecture and weights (so the same outputs); the
    original is untouched. The paper starts from a trained dense model; this is
    how to do that::

        dense = keras.models.load_model("dense.keras")
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

    Returns:
        A new, uncompiled model.

    Raises:
        TypeError: `model` is not a Keras model, or `regularizer` is not one.
        ValueError: `model` is subclassed or not built, or `layer_types` names
            an unsupported type.
    """
    flavours.check_model(model)
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
    readers = {}
    if _has_group_regularizer(chooser) and flavours.is_graph_model(model) and model.built:
        if any(_depthwise_spec(layer) for layer in flavours.flat_layers(model)):
            readers = _channel_readers(model)
    links = []
    clone = _clone_with_regularizers(model, chooser, bias_regularizer, types, readers, links)
    layers = {layer.name: layer for layer in flavours.flat_layers(clone)}
    for coupled, names in links:
        kernels = []
        for name in names:
            reader = layers[name]
            spec = registry.kernel_specs(reader)[-1]
            kernels.append((registry.kernel_variable(reader, spec), spec.input_axes[0]))
        coupled.link(kernels)
    return clone


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
                elif consumer.kind == "kernel":
                    names.append(registry.unwrap(consumer.layer).name)
        found[layer.name] = names
    return found


def _clone_with_regularizers(model, chooser, bias_regularizer, types, readers, links):
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
    module = flavours.keras_module(model)

    def clone_layer(layer):
        if isinstance(layer, module.Model):
            return _clone_with_regularizers(layer, chooser, bias_regularizer, types, readers, links)
        new = type(layer).from_config(layer.get_config())
        name = registry.layer_type(layer)
        if name not in types:
            return new
        if isinstance(chooser, dict):
            regularizer = chooser.get(layer.name)
            if regularizer is None:
                return new
        else:
            regularizer = chooser
        for spec in registry.kernel_specs(layer):
            adapted = regularizer
            if hasattr(regularizer, "with_layout"):
                adapted = regularizer.with_layout(spec.layout)
            if spec.layout == "depthwise" and isinstance(regularizer, (GroupHoyerSquare, GroupLasso)):
                # one group per channel, across the layers that read it
                adapted = ChannelGroups.from_group_regularizer(regularizer, readers.get(layer.name, ()))
                links.append((adapted, adapted.readers))
            setattr(new, spec.regularizer_attribute, adapted)
        if bias_regularizer is not None and hasattr(new, "bias_regularizer"):
            new.bias_regularizer = bias_regularizer
        return new

    clone = module.models.clone_model(model, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
