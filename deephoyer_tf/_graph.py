"""Dependency analysis shared by the sparsity report and structural surgery.

Answers one question: *which units of which tensors are live, and what must be
cut together*. A **unit** is one index of a tensor's last axis (a Dense
feature, a Conv channel); liveness is computed per unit.

* `build_graph(model)` flattens a Sequential or functional model (Keras 3 or
  tf_keras, nested models inlined) into `Op`s over `TensorNode`s, in data-flow
  order. Each op has a *kind* saying how units flow through it:

  - ``"kernel"``: a layer of the `_layers` registry (Dense, Conv...): unit
    ``i`` in reaches unit ``j`` out when some kernel weight linking them is
    nonzero (`kernel_connectivity`);
  - ``"channelwise"``: unit ``c`` in is unit ``c`` out (activations, dropout,
    pooling, padding, BatchNormalization, ...);
  - ``"reshape"``: Flatten / Reshape: elements keep their row-major order, so
    element ``e`` belongs to unit ``e % C_in`` in and ``e % C_out`` out
    (Flatten sends channel ``c`` to features ``p * C + c``);
  - ``"merge"``: Add, Subtract, Average, Maximum, Minimum, Multiply: unit
    ``c`` of every input is unit ``c`` out (the inputs are coupled);
  - ``"concat"``: Concatenate on the last axis: input ``k``'s units are
    offset by the sizes of inputs ``0..k-1``;
  - ``"opaque"``: anything else: every unit out depends on every unit in.

* `Analysis(graph)` propagates, per tensor, ``fwd`` (the unit is reached from
  the inputs through nonzero weights: it varies with the input; otherwise it
  is an input-independent constant) forward, and ``used`` (the unit reaches an
  output through nonzero weights) backward. A unit is live when both hold: it
  lies on a path of nonzero weights from the inputs to the outputs. Between
  two consecutive kernel layers this means "nonzero weights in both", the
  paper's definition. For each kernel op it also gives `live_inputs` and
  `live_outputs`.
* `demand(...)` and `physical(...)` (used by surgery) say which units must be
  kept physically, given which units each kernel layer needs.

Models must be channels-last.
"""

import dataclasses

import numpy as np

from deephoyer_tf import _layers
from deephoyer_tf import _models

_CHANNELWISE = frozenset(
    [
        "Activation",
        "ReLU",
        "LeakyReLU",
        "ELU",
        "PReLU",
        "ThresholdedReLU",
        "Dropout",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "GaussianNoise",
        "GaussianDropout",
        "AlphaDropout",
        "ActivityRegularization",
        "Identity",
        "BatchNormalization",
        "MaxPooling1D",
        "MaxPooling2D",
        "MaxPooling3D",
        "AveragePooling1D",
        "AveragePooling2D",
        "AveragePooling3D",
        "GlobalMaxPooling1D",
        "GlobalMaxPooling2D",
        "GlobalMaxPooling3D",
        "GlobalAveragePooling1D",
        "GlobalAveragePooling2D",
        "GlobalAveragePooling3D",
        "ZeroPadding1D",
        "ZeroPadding2D",
        "ZeroPadding3D",
        "Cropping1D",
        "Cropping2D",
        "Cropping3D",
        "UpSampling1D",
        "UpSampling2D",
        "UpSampling3D",
    ]
)
_RESHAPE = frozenset(["Flatten", "Reshape"])
_MERGE = frozenset(["Add", "Subtract", "Average", "Maximum", "Minimum", "Multiply"])
_CONCAT = frozenset(["Concatenate"])
_KNOWN = _CHANNELWISE | _RESHAPE | _MERGE | _CONCAT | {"InputLayer"}

# Activations that mix the units of their input (not element-wise).
_MIXING_ACTIVATIONS = frozenset(["softmax", "log_softmax"])

# Wrappers whose wrapped layer (`.layer`) owns the kernel, matched by class
# name so that TFMOT is never imported.
_WRAPPERS = frozenset(["PruneLowMagnitude"])


def unwrap(layer):
    """The layer inside a known wrapper (TFMOT's PruneLowMagnitude), else `layer`."""
    while type(layer).__name__ in _WRAPPERS and hasattr(layer, "layer"):
        layer = layer.layer
    return layer


def type_name(layer):
    """The Keras class name `layer` is handled as (first Keras class in its MRO)."""
    layer = unwrap(layer)
    kernel_type = _layers.layer_type(layer)
    if kernel_type is not None:
        return kernel_type
    for cls in type(layer).__mro__:
        module = (getattr(cls, "__module__", "") or "").split(".")[0]
        if module in ("keras", "tf_keras") and cls.__name__ in _KNOWN:
            return cls.__name__
    return type(layer).__name__


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
        return self.shape[-1] if self.shape else 1

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
    if not _models.is_graph_model(model) or not model.built:
        return None
    graph = getattr(model, "_functional", model)  # Keras 3 Sequential
    if graph is None or not hasattr(graph, "_nodes_by_depth"):
        return None
    depths = sorted(graph._nodes_by_depth, reverse=True)
    nodes = [node for depth in depths for node in graph._nodes_by_depth[depth]]
    return list(graph.inputs), list(graph.outputs), nodes


def _node_parts(node):
    """(layer, input tensors, output tensors, is_input) of a Keras node."""
    if hasattr(node, "operation"):  # Keras 3
        return node.operation, list(node.input_tensors), list(node.outputs), node.is_input
    import tensorflow as tf

    return node.layer, list(node.keras_inputs), tf.nest.flatten(node.outputs), node.is_input


def _kind(layer, type_, n_inputs):
    layer = unwrap(layer)
    if type_ in _layers._REGISTRY:
        return "kernel"
    if channels_first(layer):
        return "opaque"
    if type_ in _CHANNELWISE and n_inputs == 1:
        if type_ == "Activation" and mixes_units(layer):
            return "opaque"
        return "channelwise"
    if type_ in _RESHAPE and n_inputs == 1:
        return "reshape"
    if type_ in _MERGE and n_inputs >= 1:
        return "merge"
    if type_ in _CONCAT and n_inputs >= 1:
        return "concat"
    return "opaque"


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
        layer, ins, outs, is_input = _node_parts(node)
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
                kind=_kind(layer, type_, len(in_nodes)),
                type=type_,
                name=prefix + layer.name,
                inputs=in_nodes,
                outputs=out_nodes,
                index=len(ops),
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
    return isinstance(layer, _models.keras_module(layer).Model)


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
    if op.kind == "merge":
        if len({t.shape for t in op.inputs + op.outputs}) != 1:
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


# --- kernels -------------------------------------------------------------


def kernel_values(layer, spec):
    """The kernel named by `spec` as a NumPy array, masked by a TFMOT wrapper."""
    inner = unwrap(layer)
    variable = _layers.kernel_variable(inner, spec)
    values = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
    for weight, mask, _ in getattr(layer, "pruning_vars", ()) or ():
        if weight is variable:
            values = values * np.asarray(mask.numpy())
    return values


def kernel_connectivity(op):
    """Boolean matrix ``M[i, j]``: some nonzero kernel weight links unit i in to j out.

    Dense / Conv ``(k..., in/groups, out)``: ``M[i, j] = any(W[..., i, j] != 0)``
    (block diagonal with ``groups``); ConvTranspose ``(k..., out, in)``;
    DepthwiseConv ``(k..., in, m)``: ``i`` reaches ``i * m + k``; SeparableConv:
    the Boolean product of its depthwise and pointwise matrices; Embedding:
    rows are vocabulary entries.
    """
    layer = unwrap(op.layer)
    matrices = []
    for spec in _layers.kernel_specs(layer):
        w = kernel_values(op.layer, spec)
        if w.ndim < 2:
            raise ValueError(
                f"Layer {op.name!r} of type {op.type} has a kernel of shape "
                f"{w.shape}; expected a kernel of rank >= 2."
            )
        spatial = tuple(range(w.ndim - 2))
        nz = np.any(w != 0, axis=spatial) if spatial else (w != 0)
        if spec.layout == "out_in":
            matrices.append(nz.T)
        elif spec.layout == "depthwise":
            n_in, mult = nz.shape
            m = np.zeros((n_in, n_in * mult), bool)
            rows = np.repeat(np.arange(n_in), mult)
            m[rows, np.arange(n_in * mult)] = nz.reshape(-1)
            matrices.append(m)
        else:
            groups = int(getattr(layer, "groups", 1) or 1)
            if groups > 1:
                cin, out = nz.shape
                og = out // groups
                m = np.zeros((cin * groups, out), bool)
                for g in range(groups):
                    block = slice(g * og, (g + 1) * og)
                    m[g * cin : (g + 1) * cin, block] = nz[:, block]
                nz = m
            matrices.append(nz)
    result = matrices[0]
    for m in matrices[1:]:
        result = (result.astype(np.int64) @ m.astype(np.int64)) > 0
    return result


# --- propagation -----------------------------------------------------------


def _reshape_index(op):
    """Per element (row-major, batch excluded): its unit in and its unit out."""
    c_in, c_out = op.inputs[0].units, op.outputs[0].units
    n = int(np.prod(op.inputs[0].shape)) if op.inputs[0].shape else 1
    e = np.arange(n)
    return e % c_in, e % c_out


def _flow_forward(op, ins, connectivity):
    """Units of each output reached by the marked units of the inputs."""
    kind = op.kind
    if kind == "kernel":
        if op.type == "Embedding":
            out = connectivity.any(axis=0) & any(x.any() for x in ins)
        else:
            out = connectivity[ins[0]].any(axis=0)
        if mixes_units(op.layer):
            out = np.full(out.shape, out.any())
        return [out]
    if kind == "channelwise":
        out = ins[0].copy()
        if op.type == "BatchNormalization":
            out &= _batchnorm_gain(op) != 0
        return [out]
    if kind == "reshape":
        unit_in, unit_out = _reshape_index(op)
        out = np.zeros(op.outputs[0].units, bool)
        np.logical_or.at(out, unit_out, ins[0][unit_in])
        return [out]
    if kind == "merge":
        return [np.logical_or.reduce(ins)]
    if kind == "concat":
        return [np.concatenate(ins)]
    any_in = any(x.any() for x in ins)
    return [np.full(t.units, any_in) for t in op.outputs]


def _flow_backward(op, outs, connectivity):
    """Units of each input that reach the marked units of the outputs."""
    kind = op.kind
    if kind == "kernel":
        out = outs[0]
        if mixes_units(op.layer):
            out = np.full(out.shape, out.any())
        if op.type == "Embedding":
            return [np.full(t.units, out.any()) for t in op.inputs]
        return [connectivity[:, out].any(axis=1)]
    if kind == "channelwise":
        x = outs[0].copy()
        if op.type == "BatchNormalization":
            x &= _batchnorm_gain(op) != 0
        return [x]
    if kind == "reshape":
        unit_in, unit_out = _reshape_index(op)
        x = np.zeros(op.inputs[0].units, bool)
        np.logical_or.at(x, unit_in, outs[0][unit_out])
        return [x]
    if kind == "merge":
        return [outs[0].copy() for _ in op.inputs]
    if kind == "concat":
        return list(np.split(outs[0], concat_offsets(op)[1:-1]))
    any_out = any(x.any() for x in outs)
    return [np.full(t.units, any_out) for t in op.inputs]


def concat_offsets(op):
    """Offsets of the inputs of a last-axis Concatenate op: ``[0, n0, n0+n1, ...]``."""
    return np.cumsum([0] + [t.units for t in op.inputs])


def _batchnorm_gain(op):
    layer = unwrap(op.layer)
    units = op.inputs[0].units
    gamma = getattr(layer, "gamma", None) if getattr(layer, "scale", True) else None
    if gamma is None:
        return np.ones(units)
    return np.asarray(gamma.numpy()).reshape(-1)


class Analysis:
    """Liveness of every unit of a `Graph`.

    Attributes:
        graph: the `Graph`.
        connectivity: dict kernel `Op` -> Boolean matrix (`kernel_connectivity`).
        fwd: dict `TensorNode` -> Boolean vector: the unit varies with the input.
        used: dict `TensorNode` -> Boolean vector: the unit reaches an output.
    """

    def __init__(self, graph):
        self.graph = graph
        self.connectivity = {op: kernel_connectivity(op) for op in graph.kernel_ops()}
        self.fwd = {t: np.ones(t.units, bool) for t in graph.inputs}
        for op in graph.ops:
            outs = _flow_forward(op, [self.fwd[t] for t in op.inputs], self.connectivity.get(op))
            for t, x in zip(op.outputs, outs):
                self.fwd[t] = x
        self.used = {}
        for t in graph.outputs:
            self.used[t] = np.ones(t.units, bool)
        for op in reversed(graph.ops):
            outs = [self.used.get(t, np.zeros(t.units, bool)) for t in op.outputs]
            for t, x in zip(op.inputs, _flow_backward(op, outs, self.connectivity.get(op))):
                self.used[t] = self.used.get(t, np.zeros(t.units, bool)) | x

    def live(self, tensor):
        """Units of `tensor` that are both reached from the inputs and used."""
        return self.fwd[tensor] & self.used.get(tensor, np.zeros(tensor.units, bool))

    def live_outputs(self, op):
        """Output units of kernel `op` with nonzero weights from live inputs, used later."""
        return self.live(op.outputs[0])

    def live_inputs(self, op):
        """Input units of kernel `op` with nonzero weights to its live outputs."""
        x = self.fwd[op.inputs[0]]
        out = self.live_outputs(op)
        m = self.connectivity[op]
        if op.type == "Embedding":
            return m[:, out].any(axis=1)
        return x & m[:, out].any(axis=1)


# --- what must be kept physically (surgery) --------------------------------


def demand(analysis, needs, keep_all=frozenset()):
    """Units of each tensor that must exist physically.

    Args:
        analysis: an `Analysis`.
        needs: dict kernel `Op` -> Boolean vector of the input units it keeps.
        keep_all: ops treated as opaque (their inputs and outputs are kept
            whole), e.g. a Reshape that surgery cannot cut.

    Model outputs keep every unit, and so do kernel ops with a unit-mixing
    activation (softmax); a kernel op needs `needs[op]` of its input;
    channel-wise ops and merges pass demand to their inputs unchanged (merged
    inputs must keep the same units), reshapes map it back to input units,
    concatenations split it, opaque ops need every input unit.
    """
    graph = analysis.graph
    result = {t: np.zeros(t.units, bool) for op in graph.ops for t in op.inputs + op.outputs}
    for t in graph.inputs:
        result[t] = np.zeros(t.units, bool)
    for t in graph.outputs:
        result[t] = np.ones(t.units, bool)
    for op in reversed(graph.ops):
        if op.kind == "kernel" and mixes_units(op.layer):
            result[op.outputs[0]] = np.ones(op.outputs[0].units, bool)
        outs = [result[t] for t in op.outputs]
        if op.kind == "kernel":
            ins = [needs[op]]
        elif op.kind == "opaque" or op in keep_all:
            ins = [np.ones(t.units, bool) for t in op.inputs]
        elif op.kind == "channelwise":
            ins = [outs[0].copy()]
        else:
            ins = _flow_backward(op, outs, None)
        for t, x in zip(op.inputs, ins):
            result[t] = result[t] | x
    return result


def physical(analysis, demanded, keep_all=frozenset()):
    """Units of each tensor present in the shrunk model (a superset of `demanded`).

    Model inputs keep every unit; a kernel op, a merge or a concatenation
    produces exactly the demanded units (inputs are gathered to fit);
    channel-wise ops keep their input's units; a reshape keeps the elements of
    its input's units; opaque ops (and `keep_all`) keep every unit.
    """
    graph = analysis.graph
    result = {t: np.ones(t.units, bool) for t in graph.inputs}
    for op in graph.ops:
        ins = [result[t] for t in op.inputs]
        if op.kind == "opaque" or op in keep_all:
            outs = [np.ones(t.units, bool) for t in op.outputs]
        elif op.kind in ("kernel", "merge", "concat"):
            outs = [demanded[t].copy() for t in op.outputs]
        elif op.kind == "channelwise":
            outs = [ins[0].copy()]
        else:
            outs = _flow_forward(op, ins, None)
        for t, x in zip(op.outputs, outs):
            result[t] = x
    return result
