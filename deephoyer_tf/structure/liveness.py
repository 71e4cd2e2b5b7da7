"""Liveness: which units of which tensors are live, and what must be kept together.

* `kernel_connectivity(op)`: Boolean matrix of a kernel op, unit ``i`` in
  reaches unit ``j`` out through a nonzero weight, from the kernel axes of
  the registry's `KernelSpec`s.
* `Analysis(graph)` propagates, per tensor, ``fwd`` (the unit is reached from
  the inputs through nonzero weights: it varies with the input; otherwise it
  is an input-independent constant) forward, and ``used`` (the unit reaches an
  output through nonzero weights) backward. A unit is live when both hold: it
  lies on a path of nonzero weights from the inputs to the outputs. Between
  two consecutive kernel layers this means "nonzero weights in both", the
  paper's definition. For each kernel op it also gives `live_inputs` and
  `live_outputs`.
* `demand(...)` and `physical(...)` (used by `shrink`) say which units must be
  kept physically, given which units each kernel layer needs: channels
  coupled through Add, Concatenate, Flatten and channel-wise layers stay
  consistent.
"""

import numpy as np

from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.graph import is_channel_mapped
from deephoyer_tf.structure.graph import mixes_units
from deephoyer_tf.structure.registry import unwrap


def kernel_values(layer, spec):
    """The kernel named by `spec` as a NumPy array, masked by a TFMOT wrapper."""
    variable = registry.kernel_variable(layer, spec)
    values = np.asarray(variable.numpy() if hasattr(variable, "numpy") else variable)
    for weight, mask, _ in private_api.tfmot_pruning_vars(layer):
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
    specs = registry.kernel_specs(layer)
    for spec in specs:
        w = kernel_values(op.layer, spec)
        if w.ndim < 2:
            raise ValueError(
                f"Layer {op.name!r} of type {op.type} has a kernel of shape "
                f"{w.shape}; expected a kernel of rank >= 2."
            )
        spatial = tuple(range(w.ndim - 2))
        nz = np.any(w != 0, axis=spatial) if spatial else (w != 0)
        if spec.layout == "depthwise" and matrices == [] and len(specs) == 2:
            # SeparableConv: kept as (in, multiplier) and combined with the
            # pointwise matrix below, without an (in, in * multiplier) product.
            matrices.append(("depthwise", nz))
        elif spec.layout == "out_in":
            matrices.append(nz.T)
        elif spec.layout == "depthwise":
            n_in, mult = nz.shape
            m = np.zeros((n_in, n_in * mult), bool)
            rows = np.repeat(np.arange(n_in), mult)
            m[rows, np.arange(n_in * mult)] = nz.reshape(-1)
            matrices.append(m)
        else:
            groups = conv_groups(layer)
            if groups > 1:
                nz = _block_diagonal(nz, groups)
            matrices.append(nz)
    result = matrices[0]
    if isinstance(result, tuple):
        # (i reaches j) = any_k depthwise[i, k] and pointwise[i * m + k, j]
        depthwise, pointwise = result[1], matrices[1]
        n_in, mult = depthwise.shape
        pointwise = pointwise.reshape(n_in, mult, -1)
        if mult == 1:
            result = pointwise[:, 0] & depthwise
        else:
            result = (pointwise & depthwise[:, :, None]).any(axis=1)
        matrices = [result] + matrices[2:]
    for m in matrices[1:]:
        # Boolean product as a float32 one: its entries are path counts,
        # nonnegative, so "> 0" is exact; float32 products are BLAS-fast where
        # integer products are not (a 1536x2048 product: 0.09 s against 45 s).
        result = (result.astype(np.float32) @ m.astype(np.float32)) > 0
    return result


def conv_groups(layer):
    """The ``groups`` of a grouped convolution (1 for every other layer)."""
    groups = getattr(unwrap(layer), "groups", 1)
    return groups if isinstance(groups, int) and groups > 1 else 1


def _block_diagonal(nz, groups):
    """``(in/groups, out)`` -> ``(in, out)``: input ``g*cin+i`` reaches group g's outputs only."""
    cin, out = nz.shape
    og = out // groups
    blocks = nz.reshape(cin, groups, og).transpose(1, 0, 2)  # (groups, cin, og)
    m = np.zeros((groups, cin, groups, og), bool)
    m[np.arange(groups), :, np.arange(groups), :] = blocks
    return m.reshape(groups * cin, out)


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
    scale = _layernorm_scale(op)
    if scale is not None:
        # Its channels are kept together (opaque); a channel whose scale is
        # zero outputs its offset, whatever the input: a constant.
        return [np.full(op.outputs[0].units, any_in) & (scale != 0)]
    return [np.full(t.units, any_in) for t in op.outputs]


def _layernorm_scale(op):
    """The per-channel scale of a LayerNormalization over the last axis alone, else None."""
    if op.type != "LayerNormalization" or len(op.inputs) != 1 or not op.inputs[0].shape:
        return None
    layer = unwrap(op.layer)
    axis = getattr(layer, "axis", None)
    axes = list(axis) if isinstance(axis, (list, tuple)) else [axis]
    rank = len(op.inputs[0].shape) + 1
    if len(axes) != 1 or not isinstance(axes[0], int) or axes[0] % rank != rank - 1:
        return None
    gamma = getattr(layer, "gamma", None) if getattr(layer, "scale", True) else None
    units = op.outputs[0].units
    if gamma is None:
        return np.ones(units)
    values = np.asarray(gamma.numpy()).reshape(-1)
    return values if values.size == units else None


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
    activation (softmax); a kernel op needs `needs[op]` of its input, except a
    depthwise op (`is_channel_mapped`), which needs input channel ``c`` exactly
    when one of its outputs ``c * m + k`` is demanded (written into `needs`);
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
        if op in keep_all:
            ins = [np.ones(t.units, bool) for t in op.inputs]
        elif is_channel_mapped(op):
            needs[op] = channel_need(op, outs[0])
            ins = [needs[op]]
        elif op.kind == "kernel" and conv_groups(op.layer) > 1:
            needs[op] = group_cut(op, needs[op], outs[0])[0]
            ins = [needs[op]]
        elif op.kind == "kernel":
            ins = [needs[op]]
        elif op.kind == "opaque":
            ins = [np.ones(t.units, bool) for t in op.inputs]
        elif op.kind == "channelwise":
            ins = [outs[0].copy()]
        else:
            ins = _flow_backward(op, outs, None)
        for t, x in zip(op.inputs, ins):
            result[t] = result[t] | x
    return result


def channel_need(op, out_units):
    """Input channels of depthwise `op` whose outputs ``c * m + k`` include a marked one."""
    n_in = op.inputs[0].units
    return np.asarray(out_units, bool).reshape(n_in, -1).any(axis=1)


def channel_outputs(op, in_units):
    """Outputs ``c * m + k`` of depthwise `op` for the marked input channels ``c``."""
    multiplier = op.outputs[0].units // op.inputs[0].units
    return np.repeat(np.asarray(in_units, bool), multiplier)


def physical(analysis, demanded, keep_all=frozenset(), needs=None):
    """Units of each tensor present in the shrunk model (a superset of `demanded`).

    Model inputs keep every unit; a kernel op, a merge or a concatenation
    produces exactly the demanded units (inputs are gathered to fit), a
    depthwise op every output of the input channels it keeps, a grouped
    convolution the outputs `group_cut` keeps (given `needs`, as `demand`
    wrote them);
    channel-wise ops keep their input's units; a reshape keeps the elements of
    its input's units; opaque ops (and `keep_all`) keep every unit.
    """
    graph = analysis.graph
    result = {t: np.ones(t.units, bool) for t in graph.inputs}
    for op in graph.ops:
        ins = [result[t] for t in op.inputs]
        if op.kind == "opaque" or op in keep_all:
            outs = [np.ones(t.units, bool) for t in op.outputs]
        elif is_channel_mapped(op):
            # whole channels: every multiplier output of a kept input channel
            outs = [channel_outputs(op, channel_need(op, demanded[op.outputs[0]]))]
        elif op.kind == "kernel" and conv_groups(op.layer) > 1 and needs is not None:
            outs = [group_cut(op, needs[op], demanded[op.outputs[0]])[1]]
        elif op.kind in ("kernel", "merge", "concat"):
            outs = [demanded[t].copy() for t in op.outputs]
        elif op.kind == "channelwise":
            outs = [ins[0].copy()]
        else:
            outs = _flow_forward(op, ins, None)
        for t, x in zip(op.outputs, outs):
            result[t] = x
    return result


def group_cut(op, need_in, want_out):
    """Units a grouped convolution keeps: ``(inputs, outputs)``, Boolean vectors.

    A convolution with ``groups=G`` reads input units ``g * cin + i`` into
    outputs ``g * og + j`` of the same group ``g`` only. Cut, it stays a
    grouped convolution: it keeps the groups with a wanted output, drops the
    others whole, and keeps the same number of inputs (and of outputs) in
    every kept group: the largest number any kept group needs, each group
    padded with its first units not needed (dead units kept so that the
    grouping stays valid). Without any wanted output, `need_in` and
    `want_out` are returned unchanged.
    """
    groups = conv_groups(op.layer)
    need = np.asarray(need_in, bool).reshape(groups, -1)
    want = np.asarray(want_out, bool).reshape(groups, -1)
    kept = want.any(axis=1)
    if not kept.any():
        return np.asarray(need_in, bool).copy(), np.asarray(want_out, bool).copy()
    need = need & kept[:, None]
    n_in = max(1, int(need.sum(axis=1).max()))
    n_out = int(want.sum(axis=1).max())
    return _pad_groups(need, kept, n_in).reshape(-1), _pad_groups(want, kept, n_out).reshape(-1)


def _pad_groups(mask, kept, count):
    """`mask` with its first unmarked entries marked until each kept row has `count`."""
    missing = count - mask.sum(axis=1)
    rank = np.cumsum(~mask, axis=1)  # 1, 2, ... over the unmarked entries of each row
    extra = ~mask & (rank <= missing[:, None]) & kept[:, None]
    return mask | extra
