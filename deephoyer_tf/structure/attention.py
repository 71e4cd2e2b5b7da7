"""Transformer layers: `EinsumDense` and `MultiHeadAttention` in the registry and in `shrink`.

* `einsum_axes(layer)`: the kernel axes of an `EinsumDense` that index its
  input (contracted), output and shared units, read from its equation
  (``"abc,cde->abde"``: kernel ``cde``, input axis ``c``, output axes ``d, e``).
* An `EinsumDense` that is a plain projection (``"...b,bc->...c"``,
  ``"abc,cd->abd"``: a 2-D kernel contracting the input's last axis into the
  output's last axis) is a Dense layer to the rest of the package: its units
  are followed through the graph and `shrink` cuts them (`cut_einsum_dense`).
  Any other equation is kept whole by `shrink` and reported on its own
  (`describe_einsum`).
* `MultiHeadAttention`: its query, key, value (gate) and output projections
  are its kernels (`attention_specs`). To the graph it is opaque (its inputs and
  outputs keep every unit: they are the residual stream); inside it, `shrink`
  removes dead heads and dead key/value dimensions (`cut_attention`), and
  `sparsity_report` counts live heads and attention MACs
  (`describe_attention`).

When a head can be removed exactly (`head_liveness`). Head ``h`` computes
``softmax(Q_h K_h^T / sqrt(d_k)) V_h``, and the output projection adds
``O[h] @`` that to the output. It contributes nothing when ``O[h]`` is zero or
its value projection (kernel and bias) is zero; when only the value kernel is
zero, ``V_h`` is its bias in every position and, since each softmax row sums
to one, the head adds the constant ``b_V[h] @ O[h]``, which is folded into the
output bias (not with a gate, which varies). A key dimension ``e`` contributes
nothing to head ``h``'s scores when ``Q[:, h, e]`` (kernel and bias) is zero or
``K[:, h, e]``'s kernel is zero (its bias then shifts every score of a query
by the same amount, which softmax ignores); it can go when that holds in every
kept head, and the query is rescaled by ``sqrt(d_k' / d_k)`` so that the
scores keep their scale. A value dimension goes likewise when its value
slice or output rows are zero in every kept head. A query (key) that is zero
is *not* a dead head: it attends uniformly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING
from typing import List
from typing import Tuple

import numpy as np

from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.registry import KernelSpec
from deephoyer_tf.structure.registry import unwrap

if TYPE_CHECKING:
    from typing import Any

    LayerLike = Any

_ELLIPSIS = "."  # one token standing for "..."


# --- EinsumDense ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EinsumAxes:
    """The kernel axes of an `EinsumDense` (negative, from the end of the kernel).

    Attributes:
        input_axes: axes contracted with the input (input units).
        output_axes: axes that appear in the output only (output units).
        shared_axes: axes in the input, kernel and output alike (one kernel
            slice per index, e.g. per head).
    """

    input_axes: Tuple[int, ...]
    output_axes: Tuple[int, ...]
    shared_axes: Tuple[int, ...]


def parse_equation(equation: str) -> Tuple[str, str, str]:
    """``(input, kernel, output)`` subscripts of an `EinsumDense` equation, ``...`` as ``.``."""
    if not isinstance(equation, str) or "->" not in equation or "," not in equation:
        raise ValueError(
            "Invalid einsum equation. Expected 'input,kernel->output', e.g. "
            f"'abc,cd->abd'. Received: equation={equation!r}"
        )
    left, output = equation.replace(" ", "").split("->")
    parts = left.split(",")
    if len(parts) != 2:
        raise ValueError(
            "Invalid einsum equation. Expected two operands (input and kernel). "
            f"Received: equation={equation!r}"
        )
    inp, kernel = (p.replace("...", _ELLIPSIS) for p in parts)
    output = output.replace("...", _ELLIPSIS)
    if _ELLIPSIS in kernel:
        raise ValueError(
            f"Invalid einsum equation {equation!r}: the kernel subscripts cannot hold '...'."
        )
    return inp, kernel, output


def einsum_axes(layer: LayerLike) -> EinsumAxes:
    """The input, output and shared kernel axes of `EinsumDense` `layer`."""
    inp, kernel, out = parse_equation(unwrap(layer).equation)
    rank = len(kernel)
    input_axes, output_axes, shared_axes = [], [], []
    for k, letter in enumerate(kernel):
        axis = k - rank
        if letter in inp and letter in out:
            shared_axes.append(axis)
        elif letter in inp:
            input_axes.append(axis)
        elif letter in out:
            output_axes.append(axis)
        else:
            # summed over the kernel alone: the sum behaves as one input unit
            input_axes.append(axis)
    return EinsumAxes(tuple(input_axes), tuple(output_axes), tuple(shared_axes))


def is_projection(layer: LayerLike) -> bool:
    """An `EinsumDense` that is a Dense layer: ``"...b,bc->...c"`` and the like.

    Its kernel is ``(in, out)``; the input's last axis is contracted, the
    output's last axis is the kernel's last, and every other axis of the input
    is an axis of the output, in the same order.
    """
    inp, kernel, out = parse_equation(unwrap(layer).equation)
    if len(kernel) != 2 or not inp or not out:
        return False
    a, b = kernel
    return inp[-1] == a and out[-1] == b and a not in out and b not in inp and inp[:-1] == out[:-1]


def einsum_specs(layer: LayerLike) -> Tuple[KernelSpec, ...]:
    layout = "in_out" if is_projection(layer) else "einsum"
    return (KernelSpec("kernel", "kernel_regularizer", layout),)


def einsum_flow(layer: LayerLike) -> str:
    return "kernel" if is_projection(layer) else "opaque"


def _bias_letters(layer):
    """The output subscripts the bias of `EinsumDense` `layer` spans ('' without bias)."""
    bias_axes = getattr(layer, "bias_axes", None)
    if not bias_axes:
        return ""
    _, _, out = parse_equation(layer.equation)
    return "".join(letter for letter in out if letter in bias_axes)


def cut_einsum_dense(layer: LayerLike, cut) -> Tuple[dict, List[np.ndarray]]:
    """`shrink`'s cutter of `EinsumDense`: a projection loses its dead inputs and outputs.

    The kernel ``(in, out)`` is sliced, ``output_shape``'s last entry becomes
    the number of kept outputs, and the bias (over the output's last axis) is
    sliced, with folded constants (`Cut.bias_delta`) added; a projection
    without bias gets one over its output axis when constants must be folded.
    Any other equation is copied unchanged (its units are kept whole).
    """
    config = layer.get_config()
    if not is_projection(layer):
        return config, layer.get_weights()
    keep_in, keep_out = cut.keep_inputs[0], cut.keep_outputs[0]
    _, _, out = parse_equation(layer.equation)
    weights = [np.asarray(w) for w in layer.get_weights()]
    kernel = weights[0][keep_in][:, keep_out]
    shape = config["output_shape"]
    shape = list(shape) if isinstance(shape, (list, tuple)) else [shape]
    shape[-1] = int(keep_out.sum())
    config["output_shape"] = shape if len(shape) > 1 else shape[0]
    letters = _bias_letters(layer)
    bias = None
    if letters:
        if letters[-1] != out[-1]:
            # a bias over other output axes only: it does not depend on the cut units
            bias = weights[1]
        else:
            bias = weights[1][..., keep_out]
    delta = cut.bias_delta
    if delta is not None and np.any(delta):
        if bias is None:
            config["bias_axes"] = out[-1]
            bias = np.zeros(int(keep_out.sum()), kernel.dtype)
        elif letters[-1] != out[-1]:
            raise ValueError(
                f"shrink() must fold constants into the bias of layer {layer.name!r} "
                f"(EinsumDense {layer.equation!r}), whose bias_axes {layer.bias_axes!r} do "
                "not include its output axis."
            )
        bias = bias + delta.astype(bias.dtype)
    return config, [kernel] + ([bias] if bias is not None else [])


def _einsum_sizes(layer, kernel_shape):
    inp, kernel, out = parse_equation(layer.equation)
    return dict(zip(kernel, kernel_shape)), inp, out


def describe_einsum(op, sequence_length=None):
    """The `sparsity_report` row of an `EinsumDense` that is not a projection.

    MACs count, per output position, the kernel entries over live input and
    output units: ``positions x shared x live inputs x live outputs``, where a
    unit is an index of the input (output) kernel axes with a nonzero weight.
    """
    from deephoyer_tf.structure import liveness
    from deephoyer_tf.structure import report

    layer = unwrap(op.layer)
    spec = einsum_specs(layer)[0]
    w = liveness.kernel_values(op.layer, spec)
    axes = einsum_axes(layer)
    nz = w != 0
    live_in = _any_over(nz, axes.input_axes)
    live_out = _any_over(nz, axes.output_axes)
    sizes, _, out = _einsum_sizes(layer, w.shape)
    shared = int(np.prod([w.shape[a] for a in axes.shared_axes])) if axes.shared_axes else 1
    out_shape = op.outputs[0].shape if op.outputs else None
    positions = _positions_from_output(out_shape, out, sizes, sequence_length)
    n_in, n_out = live_in.size, live_out.size
    dense = macs = None
    if positions is not None:
        dense = positions * shared * n_in * n_out
        macs = positions * shared * int(live_in.sum()) * int(live_out.sum())
    return report.make_row(
        op.name, op.layer, [w], live_in, live_out, dense_macs=dense or 0, macs=macs
    )


def _any_over(nz, keep):
    """Flattened over the `keep` axes: whether each index has a nonzero entry."""
    if not keep:
        return np.asarray([nz.any()])
    keep = [a % nz.ndim for a in keep]
    others = tuple(a for a in range(nz.ndim) if a not in keep)
    reduced = nz.any(axis=others) if others else nz
    return reduced.reshape(-1)


def _positions_from_output(out_shape, out_letters, sizes, sequence_length):
    """Output positions per example: the output's entries over those the kernel indexes."""
    if out_shape is None:
        return None
    total = _known_product(list(out_shape), sequence_length)
    if total is None:
        return None
    indexed = int(np.prod([sizes[letter] for letter in set(out_letters) if letter in sizes]))
    return total // max(indexed, 1)


def _known_product(dims, sequence_length):
    if any(d is None for d in dims):
        if sequence_length is None:
            return None
        dims = [sequence_length if d is None else d for d in dims]
    return int(np.prod(dims)) if dims else 1


# --- MultiHeadAttention ----------------------------------------------------------

_ROLES = ("query", "key", "value", "gate", "output")


def attention_projections(layer: LayerLike) -> dict:
    """``{role: EinsumDense}`` of a built `MultiHeadAttention` (the gate when it has one)."""
    layer = unwrap(layer)
    found = {}
    for role in _ROLES:
        sublayer = private_api.attention_projection(layer, role)
        if sublayer is not None:
            found[role] = sublayer
    return found


def attention_specs(layer: LayerLike) -> Tuple[KernelSpec, ...]:
    """The kernels of `MultiHeadAttention` `layer`: query, key, value, (gate), output."""
    layer = unwrap(layer)
    use_gate = bool(getattr(layer, "_use_gate", False))
    specs = []
    for role in _ROLES:
        if role == "gate" and not use_gate:
            continue
        names = tuple(f"{name}.kernel" for name in private_api.ATTENTION_PROJECTIONS[role])
        specs.append(KernelSpec(names, "kernel_regularizer", "einsum"))
    return tuple(specs)


# The class-level description (the widest configuration) for the registry.
ATTENTION_KERNELS = tuple(
    KernelSpec(tuple(f"{n}.kernel" for n in private_api.ATTENTION_PROJECTIONS[role]),
               "kernel_regularizer", "einsum")
    for role in _ROLES
)


def is_attention(layer: LayerLike) -> bool:
    """`layer` (or a TFMOT wrapper of it) is handled as a `MultiHeadAttention`."""
    entry = registry.entry_for(layer)
    return entry is not None and entry.specs is attention_specs


def attention_flow(layer: LayerLike) -> str:
    return "opaque"


# Axis of the heads in each projection's kernel: (in, heads, dim) and (heads, dim, out...).
HEAD_AXIS = {"query": 1, "key": 1, "value": 1, "gate": 1, "output": 0}


@dataclasses.dataclass
class HeadLiveness:
    """Which heads and key/value dimensions of a `MultiHeadAttention` contribute.

    Attributes:
        heads: Boolean ``(num_heads,)``: the head contributes to the output
            (beyond a constant).
        key_dims: Boolean ``(key_dim,)``: the dimension contributes to the
            scores of some kept head.
        value_dims: Boolean ``(value_dim,)``: the dimension contributes to the
            output of some kept head.
        constant_heads: Boolean ``(num_heads,)``: heads removed whose constant
            contribution (value bias through the output projection) is folded
            into the output bias.
    """

    heads: np.ndarray
    key_dims: np.ndarray
    value_dims: np.ndarray
    constant_heads: np.ndarray


def _weights(layer):
    """``{role: (kernel, bias or None)}`` as NumPy arrays."""
    result = {}
    for role, sub in attention_projections(layer).items():
        kernel = np.asarray(sub.kernel.numpy() if hasattr(sub.kernel, "numpy") else sub.kernel)
        bias = getattr(sub, "bias", None)
        bias = None if bias is None else np.asarray(bias.numpy())
        result[role] = (kernel, bias)
    return result


def _zero_bias(bias, index, axis=0):
    return bias is None or not np.any(np.take(bias, index, axis=axis))


def head_liveness(layer: LayerLike) -> HeadLiveness:
    """The `HeadLiveness` of a built `MultiHeadAttention` (see the module docstring)."""
    layer = unwrap(layer)
    w = _weights(layer)
    num_heads = w["query"][0].shape[1]
    qk, qb = w["query"]
    kk, _ = w["key"]
    vk, vb = w["value"]
    ok, _ = w["output"]
    gated = "gate" in w
    heads = np.ones(num_heads, bool)
    constant = np.zeros(num_heads, bool)
    for h in range(num_heads):
        value_kernel_zero = not np.any(vk[:, h, :])
        output_zero = not np.any(ok[h])
        if output_zero or (value_kernel_zero and _zero_bias(vb, h)):
            heads[h] = False
        elif value_kernel_zero and not gated:
            heads[h] = False
            constant[h] = True
    kept = np.flatnonzero(heads)
    key_dims = np.zeros(qk.shape[2], bool)
    for e in range(qk.shape[2]):
        for h in kept:
            q_zero = not np.any(qk[:, h, e]) and (qb is None or not np.any(qb[h, e]))
            k_zero = not np.any(kk[:, h, e])
            if not (q_zero or k_zero):
                key_dims[e] = True
                break
    value_dims = np.zeros(vk.shape[2], bool)
    for e in range(vk.shape[2]):
        for h in kept:
            v_zero = not np.any(vk[:, h, e]) and (vb is None or not np.any(vb[h, e]))
            o_zero = not np.any(ok[h, e])
            if not (v_zero or o_zero):
                value_dims[e] = True
                break
    return HeadLiveness(heads, key_dims, value_dims, constant)


def _keep_one(mask):
    if not mask.any():
        mask = mask.copy()
        mask[0] = True
    return mask


def cut_attention(layer: LayerLike, cut) -> Tuple[dict, List[np.ndarray]]:
    """`shrink`'s cutter of `MultiHeadAttention`: dead heads and dimensions removed inside.

    Its inputs and outputs keep every unit (`cut` keeps them all). The new
    layer has ``num_heads`` = the live heads, ``key_dim`` / ``value_dim`` = the
    dimensions live in some kept head (at least one of each); the query is
    rescaled by ``sqrt(key_dim' / key_dim)`` and constant heads are folded
    into the output bias, so its outputs equal the original's.
    """
    layer = unwrap(layer)
    live = head_liveness(layer)
    heads = _keep_one(live.heads)
    kd = _keep_one(live.key_dims)
    vd = _keep_one(live.value_dims)
    w = _weights(layer)
    num_heads, key_dim, value_dim, use_bias, _ = private_api.attention_settings(layer)
    scale = math.sqrt(int(kd.sum()) / key_dim)
    new = {}
    for role, (kernel, bias) in w.items():
        dims = kd if role in ("query", "key") else vd
        if role == "output":
            k = kernel[heads][:, vd]
            b = bias
            if b is not None and live.constant_heads.any():
                vb = w["value"][1]
                idx = np.flatnonzero(live.constant_heads)
                b = b + np.einsum("he,he...->...", vb[idx], kernel[idx]).astype(b.dtype)
        else:
            k = kernel[:, heads][:, :, dims]
            b = None if bias is None else bias[heads][:, dims]
            if role == "query":
                k = k * np.asarray(scale, k.dtype)
                b = None if b is None else b * np.asarray(scale, b.dtype)
        new[role] = (k, b)
    if live.constant_heads.any() and (w["output"][1] is None):
        raise ValueError(
            f"shrink() must fold the constant output of removed heads of layer "
            f"{layer.name!r} into an output bias, but the layer has use_bias=False."
        )
    config = layer.get_config()
    config["num_heads"] = int(heads.sum())
    config["key_dim"] = int(kd.sum())
    config["value_dim"] = int(vd.sum())
    weights = []
    index = _variable_roles(layer)
    for variable in layer.weights:
        role, part = index[id(variable)]
        k, b = new[role]
        weights.append(k if part == "kernel" else b)
    return config, weights


def _variable_roles(layer):
    """``id(variable) -> (role, "kernel" | "bias")`` for every weight of the layer."""
    index = {}
    for role, sub in attention_projections(layer).items():
        for variable in sub.weights:
            part = "bias" if variable is getattr(sub, "bias", None) else "kernel"
            index[id(variable)] = (role, part)
    missing = [v.name for v in layer.weights if id(v) not in index]
    if missing:
        raise ValueError(
            f"shrink() cannot cut layer {layer.name!r} of type {type(layer).__name__}: "
            f"weights {missing} belong to none of its projections."
        )
    return index


def _sequence(shape, sequence_length):
    """Positions of an attention input (every axis but the last), or None if unknown."""
    if shape is None:
        return None
    return _known_product(list(shape[:-1]), sequence_length)


def describe_attention(op, sequence_length=None):
    """The `sparsity_report` row of a `MultiHeadAttention`, heads included.

    MACs per example, with ``T`` query and ``S`` key positions, ``H`` heads,
    ``d_k``/``d_v`` key/value dimensions, ``d`` input and ``o`` output units:
    ``T d H d_k + S d H d_k + S d H d_v`` (projections; a gate adds
    ``T d H d_v``) ``+ T S H (d_k + d_v)`` (scores, weighted sum)
    ``+ T H d_v o`` (output); live MACs count the kept heads and dimensions.
    """
    from deephoyer_tf.structure import liveness
    from deephoyer_tf.structure import report

    layer = unwrap(op.layer)
    specs = attention_specs(layer)
    kernels = [liveness.kernel_values(op.layer, s) for s in specs]
    live = head_liveness(layer)
    heads = _keep_one(live.heads) if live.heads.any() else live.heads
    shapes = [t.shape for t in op.inputs]
    query_shape = shapes[0] if shapes else None
    value_shape = shapes[1] if len(shapes) > 1 else query_shape
    t = _sequence(query_shape, sequence_length)
    s = _sequence(value_shape, sequence_length)
    w = dict(zip([r for r in _ROLES if r in attention_projections(layer)], kernels))
    d_q, n_heads, d_k = w["query"].shape
    d_kv = w["key"].shape[0]
    d_v_in, _, d_v = w["value"].shape
    d_out = int(np.prod(w["output"].shape[2:]))

    def macs(h, dk, dv):
        if t is None or s is None:
            return None
        total = t * d_q * h * dk + s * d_kv * h * dk + s * d_v_in * h * dv
        if "gate" in w:
            total += t * d_q * h * dv
        return total + t * s * h * (dk + dv) + t * h * dv * d_out

    dense = macs(n_heads, d_k, d_v)
    live_macs = macs(int(heads.sum()), int(live.key_dims.sum()), int(live.value_dims.sum()))
    if not live.heads.any():
        live_macs = 0 if live_macs is not None else None
    nz_q = np.any(w["query"] != 0, axis=(1, 2))
    nz_o = np.any(w["output"] != 0, axis=(0, 1)).reshape(-1)
    biases = [b.reshape(-1) for _, b in _weights(layer).values() if b is not None]
    return report.make_row(
        op.name,
        op.layer,
        kernels,
        nz_q,
        nz_o,
        dense_macs=dense or 0,
        macs=live_macs,
        heads=n_heads,
        live_heads=int(live.heads.sum()),
        tokens=t,
        biases=np.concatenate(biases) if biases else np.zeros(0),
    )

