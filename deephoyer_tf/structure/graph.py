"""Reading a model's layer graph: `build_graph` flattens a model into ops over tensors.

`build_graph(model)` flattens a Sequential or functional model (Keras 3 or
tf_keras, nested models inlined) into `Op`s over `TensorNode`s, in data-flow
order. Each op has a *kind*, from the layer registry
(`deephoyer_tf.structure.registry`), saying how units (last-axis entries)
flow through it: ``"kernel"``, ``"channelwise"``, ``"reshape"``, ``"merge"``,
``"concat"`` or ``"opaque"``. A registered kind is demoted to ``"opaque"``
where it would not be exact (a softmax activation, a BatchNormalization over
another axis, a merge of differently shaped inputs, a channels-first layer).

Liveness on this graph is `deephoyer_tf.structure.liveness`. Models must be
channels-last.
"""

import dataclasses

import numpy as np

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.registry import unwrap

# Activations that mix the units of their input (not element-wise).
_MIXING_ACTIVATIONS = frozenset(["softmax", "log_softmax"])

def type_name(layer):
    """The type name `layer` is handled as: its registry entry's, else its class name."""
    entry = registry.entry_for(layer)
    return entry.name if entry is not None else type(unwrap(layer)).__name__


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    if activation is None:
        return None
    return getattr(activation, "__name__", str(activation))


def mixes_units(layer):
    """True when `layer` applies an activation that mixes units (softmax)."""
    return _activation_name(unwrap(layer)) in _MIXING_ACTIVATIONS


def channels_first(layer):
    return getattr(unwrap(layer), "data_format", None) == "channels_first"


@dataclasses.dataclass(eq=False)
class TensorNode:
    """One tensor of the flattened graph.

    Attributes:
        shape: its shape without the batch axis (a tuple, may hold None).
        producer: the `Op` computing it, None for a model input.
        consumers: the `Op`s reading it.
    """

    shape: tuple
    producer: object = None
    consumers: list = dataclasses.field(default_factory=list)

    @property
    def units(self):
        """Entries of the last axis (1 when unknown, e.g. token ids of any length)."""
        return self.shape[-1] if self.shape and self.shape[-1] is not None else 1

    def __repr__(self):
        where = self.producer.name if self.producer else "input"
        return f"TensorNode({where}, shape={self.shape})"


@dataclasses.dataclass(eq=False)
class Op:
    """One layer call of the flattened graph.

    Attributes:
        layer: the Keras layer called (a wrapper stays wrapped; see `unwrap`).
        kind: how units flow through it (see the module docstring).
        type: the Keras class name it is handled as.
        name: its name, prefixed by the names of the models it is nested in.
        inputs, outputs: lists of `TensorNode`.
        index: position in data-flow order.
    """

    layer: object
    kind: str
    type: str
    name: str
    inputs: list
    outputs: list
    index: int
    node: object = None  # the Keras graph node of this call
    sources: list = dataclasses.field(default_factory=list)  # its original input tensors

    def __repr__(self):
        return f"Op({self.name}: {self.type}, {self.kind})"


@dataclasses.dataclass
class Graph:
    """A model flattened into ops in data-flow (topological) order."""

    model: object
    inputs: list
    outputs: list
    ops: list
    source_inputs: list = dataclasses.field(default_factory=list)  # the model's input tensors

    def kernel_ops(self):
        return [op for op in self.ops if op.kind == "kernel"]


def _shape(tensor):
    shape = tensor.shape
    if hasattr(shape, "as_list"):
        shape = shape.as_list() if shape.rank is not None else None
    if shape is None:
        return None
    return tuple(shape)[1:]


def _functional(model):
    """(inputs, outputs, nodes in data-flow order) of a graph model, or None."""
    if not flavours.is_graph_model(model) or not model.built:
        return None
    return private_api.functional_nodes(model)


def _kind(layer, n_inputs, node=None):
    layer = unwrap(layer)
    entry = registry.entry_for(layer)
    if entry is None:
        return "opaque"
    if entry.flow is not None:
        return entry.flow(layer)
    if entry.kind == "kernel":
        return "kernel"
    if entry.kind == "elementwise":
        # `x + 3.0`, `x * y`: channel-wise with scalar constants, a merge of tensors.
        constants = private_api.node_constants(node) if node is not None else []
        if not all(np.ndim(c) == 0 and isinstance(c, (int, float, np.number)) for c in constants):
            return "opaque"
        return "channelwise" if n_inputs == 1 else "merge"
    if channels_first(layer):
        return "opaque"
    if entry.kind in ("channelwise", "reshape") and n_inputs != 1:
        return "opaque"
    if entry.kind in ("merge", "concat") and n_inputs < 1:
        return "opaque"
    if entry.kind == "channelwise" and mixes_units(layer):
        return "opaque"
    return entry.kind


def build_graph(model):
    """Flattens a built Sequential or functional `model` into a `Graph`.

    Nested Sequential and functional models are inlined (their layers appear
    as ops named ``outer/inner``). Returns None for a subclassed or unbuilt
    model, whose layer graph is not known.
    """
    parts = _functional(model)
    if parts is None:
        return None
    ops = []
    inputs = [TensorNode(_shape(t)) for t in parts[0]]
    outputs = _inline(model, parts, inputs, "", ops)
    graph = Graph(model, inputs, outputs, ops, list(parts[0]))
    for op in ops:
        _check_op(op)
    return graph


def _inline(model, parts, bound, prefix, ops):
    model_inputs, model_outputs, nodes = parts
    tensors = {id(t): node for t, node in zip(model_inputs, bound)}
    for node in nodes:
        layer, ins, outs, is_input = private_api.node_parts(node)
        if is_input or layer is None:
            continue
        if any(id(t) not in tensors for t in ins):
            continue
        in_nodes = [tensors[id(t)] for t in ins]
        inner = _functional(layer) if _is_model(layer) else None
        if inner is not None:
            out_nodes = _inline(layer, inner, in_nodes, f"{prefix}{layer.name}/", ops)
        else:
            out_nodes = [TensorNode(_shape(t)) for t in outs]
            type_ = type_name(layer)
            op = Op(
                layer=layer,
                kind=_kind(layer, len(in_nodes), node),
                type=type_,
                name=prefix + layer.name,
                inputs=in_nodes,
                outputs=out_nodes,
                index=len(ops),
                node=node,
                sources=list(ins),
            )
            ops.append(op)
            for t in in_nodes:
                t.consumers.append(op)
            for t in out_nodes:
                t.producer = op
        for t, out in zip(outs, out_nodes):
            tensors[id(t)] = out
    return [tensors[id(t)] for t in model_outputs]


def _is_model(layer):
    return flavours.is_model(layer)


def _broadcast_merge(op):
    """A merge whose inputs share the output's units and broadcast to its shape.

    Squeeze-and-excitation gates ``(H, W, C) * (1, 1, C)`` are such merges: unit
    ``c`` of every input is unit ``c`` out.
    """
    out = op.outputs[0].shape
    for t in op.inputs:
        shape = t.shape
        if len(shape) != len(out) or shape[-1] != out[-1]:
            return False
        if any(a != b and a != 1 for a, b in zip(shape[:-1], out[:-1])):
            return False
    return True


def is_channel_mapped(op):
    """A depthwise kernel op: output unit ``c * m + k`` is computed from input unit ``c`` alone."""
    if op.kind != "kernel":
        return False
    specs = registry.kernel_specs(op.layer)
    return len(specs) == 1 and specs[0].layout == "depthwise"


def _check_op(op):
    for t in op.inputs + op.outputs:
        if t.shape is None or (t.shape and t.shape[-1] is None):
            op.kind = "opaque" if op.kind != "kernel" else op.kind
    if op.kind == "reshape":
        shapes = [op.inputs[0].shape, op.outputs[0].shape]
        if any(s is None or None in s for s in shapes):
            op.kind = "opaque"
        elif int(np.prod(shapes[0])) != int(np.prod(shapes[1])):
            op.kind = "opaque"
    if op.kind == "channelwise" and op.type == "BatchNormalization":
        axis = getattr(unwrap(op.layer), "axis", -1)
        if isinstance(axis, (list, tuple)):
            axis = axis[0] if len(axis) == 1 else None
        rank = len(op.inputs[0].shape) + 1
        if axis is None or axis % rank != rank - 1:
            op.kind = "opaque"
    if op.kind == "merge" and not _broadcast_merge(op):
        op.kind = "opaque"
    if op.kind == "concat":
        axis = getattr(op.layer, "axis", -1)
        rank = len(op.outputs[0].shape) + 1
        if axis not in (-1, rank - 1):
            # Concatenated along another axis: units are coupled as in Add.
            if len({t.units for t in op.inputs + op.outputs}) == 1:
                op.kind = "merge"
            else:
                op.kind = "opaque"
    if op.kind == "kernel" and channels_first(op.layer):
        raise ValueError(
            f"Layer {op.name!r} of type {op.type} uses data_format='channels_first' "
            f"(output shape {op.outputs[0].shape}); deephoyer_tf analyses "
            "channels-last models only."
        )


