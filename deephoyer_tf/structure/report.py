"""`sparsity_report`: what a pruned model holds, in the notation of the paper's tables.

Definitions (Yang, Wen, Li, ICLR 2020, Tables 1, 2, 4, 5):

* weights are kernel weights; biases are counted separately;
* a unit (a neuron, a channel) between two layers is **live** only if it has a
  nonzero weight in both; more precisely, it lies on a path of nonzero
  weights from the model's inputs to its outputs (see `liveness`), so that
  removing every other unit leaves the outputs unchanged up to constants;
* MACs of a Dense layer are ``positions x live inputs x live outputs``
  (``positions`` is 1 for a flat input); of a Conv layer
  ``output positions x kernel positions x live input channels x live filters``;
  dense MACs count every unit;
* ``structure`` lists the live inputs of the first Dense layer, then the live
  outputs of every kernel layer except the last, in data-flow order: ``"353-45-11"``
  for LeNet-300-100 with 353 live pixels and 45 and 11 live hidden units.
"""

from __future__ import annotations

import dataclasses
import math
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import validation
from deephoyer_tf.structure import graph as graph_lib
from deephoyer_tf.structure import liveness
from deephoyer_tf.structure import patterns
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.registry import unwrap

if TYPE_CHECKING:
    from typing import Any

    ModelLike = Any  # a Keras 3 or tf_keras model


@dataclasses.dataclass
class LayerReport:
    """The report row of one kernel layer.

    Attributes:
        name: layer name (``outer/inner`` for a layer of a nested model).
        type: Keras class name (``"Dense"``, ``"Conv2D"``...).
        kernel_shape: shape of the kernel (a tuple of shapes for layers with
            several kernels, such as SeparableConv).
        kernel_weights: number of kernel weights.
        nonzero_weights: number of nonzero kernel weights.
        density: ``nonzero_weights / kernel_weights``.
        inputs: input units (Dense features, Conv input channels).
        outputs: output units (Dense neurons, Conv filters).
        live_inputs: input units that are live.
        live_outputs: output units that are live.
        dense_macs: multiply-accumulates per example counting every unit.
        macs: multiply-accumulates per example counting live units only
            (None when the output positions are unknown).
        bias_weights: number of bias weights (0 without bias).
        nonzero_biases: number of nonzero biases.
        heads: attention layers: the number of heads (None otherwise).
        live_heads: attention layers: heads that contribute to the output
            (see `deephoyer_tf.structure.attention.head_liveness`).
        tokens: attention layers: query positions per example (None when
            unknown and no ``sequence_length`` was given).
        repeated_call: the row of a second (or later) call of a layer shared
            by several calls: its MACs count (per call), its weights do not
            (they are counted once, in the row of its first call).
    """

    name: str
    type: str
    kernel_shape: tuple
    kernel_weights: int
    nonzero_weights: int
    density: float
    inputs: int
    outputs: int
    live_inputs: int
    live_outputs: int
    dense_macs: int
    macs: int | None
    bias_weights: int
    nonzero_biases: int
    heads: int | None = None
    live_heads: int | None = None
    tokens: int | None = None
    repeated_call: bool = False


@dataclasses.dataclass
class SparsityReport:
    """Per-layer and total sparsity of a model (see `sparsity_report`).

    Attributes:
        layers: list of `LayerReport`, in data-flow order.
        structure: live units in the paper's notation, e.g. ``"353-45-11"``.
        model_name: name of the model reported on.
        pattern: which block or N:M pattern the sparse Dense/Conv kernels
            satisfy, group by group (`deephoyer_tf.pattern_summary`), as text.
    """

    layers: list[LayerReport]
    structure: str
    model_name: str = ""
    pattern: str = ""

    @property
    def total_weights(self) -> int:
        """Kernel weights of all reported layers (a shared layer counted once)."""
        return sum(r.kernel_weights for r in self.layers if not r.repeated_call)

    @property
    def nonzero_weights(self) -> int:
        """Nonzero kernel weights of all reported layers (a shared layer counted once)."""
        return sum(r.nonzero_weights for r in self.layers if not r.repeated_call)

    @property
    def density(self) -> float:
        """``nonzero_weights / total_weights`` (0 for a model without kernels)."""
        return self.nonzero_weights / self.total_weights if self.total_weights else 0.0

    @property
    def compression(self) -> float:
        """``total_weights / nonzero_weights`` (inf when every weight is zero)."""
        return self.total_weights / self.nonzero_weights if self.nonzero_weights else math.inf

    @property
    def dense_macs(self) -> int:
        """MACs per example counting every unit."""
        return sum(r.dense_macs for r in self.layers)

    @property
    def macs(self) -> int:
        """MACs per example counting live units only (layers with known MACs)."""
        return sum(r.macs for r in self.layers if r.macs is not None)

    @property
    def attention_layers(self) -> list[LayerReport]:
        """The rows of attention layers (those with `heads`)."""
        return [r for r in self.layers if r.heads is not None]

    @property
    def heads(self) -> int:
        """Attention heads of all attention layers."""
        return sum(r.heads for r in self.attention_layers)

    @property
    def live_heads(self) -> int:
        """Live attention heads of all attention layers."""
        return sum(r.live_heads for r in self.attention_layers)

    @property
    def tokens(self) -> int | None:
        """Tokens per example: the query positions of the first attention layer (or None)."""
        known = [r.tokens for r in self.attention_layers if r.tokens]
        return known[0] if known else None

    @property
    def macs_per_token(self) -> float | None:
        """Live MACs per example divided by `tokens` (None without attention layers)."""
        return self.macs / self.tokens if self.tokens else None

    @property
    def dense_macs_per_token(self) -> float | None:
        return self.dense_macs / self.tokens if self.tokens else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict: totals, ``structure`` and a ``layers`` list."""
        layers = []
        for r in self.layers:
            row = dataclasses.asdict(r)
            row["kernel_shape"] = _listify(r.kernel_shape)
            layers.append(row)
        return {
            "model_name": self.model_name,
            "structure": self.structure,
            "total_weights": self.total_weights,
            "nonzero_weights": self.nonzero_weights,
            "density": self.density,
            "compression": None if math.isinf(self.compression) else self.compression,
            "dense_macs": self.dense_macs,
            "macs": self.macs,
            "heads": self.heads,
            "live_heads": self.live_heads,
            "tokens": self.tokens,
            "macs_per_token": self.macs_per_token,
            "pattern": self.pattern,
            "layers": layers,
        }

    def __str__(self) -> str:
        header = ("Layer", "Type", "Nonzero / Total", "Density", "Live in", "Live out",
                  "MACs / Dense MACs")
        rows = [header]
        for r in self.layers:
            macs = "?" if r.macs is None else f"{r.macs:,}"
            rows.append((
                r.name,
                f"{r.type} (shared, weights counted once)" if r.repeated_call else r.type,
                f"{r.nonzero_weights:,} / {r.kernel_weights:,}",
                f"{100 * r.density:.2f}%",
                f"{r.live_inputs:,} / {r.inputs:,}",
                f"{r.live_outputs:,} / {r.outputs:,}",
                f"{macs} / {r.dense_macs:,}",
            ))
        rows.append((
            "Total",
            "",
            f"{self.nonzero_weights:,} / {self.total_weights:,}",
            f"{100 * self.density:.2f}%",
            "",
            "",
            f"{self.macs:,} / {self.dense_macs:,}",
        ))
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [f"Sparsity report: {self.model_name}"]
        for k, row in enumerate(rows):
            line = "  ".join(
                cell.ljust(w) if i < 2 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths))
            )
            lines.append(line.rstrip())
            if k == 0 or k == len(rows) - 2:
                lines.append("-" * len(lines[-1]))
        mac_share = 100 * self.macs / self.dense_macs if self.dense_macs else 0.0
        lines.append(
            f"Structure: {self.structure}   Compression: {self.compression:.1f}x   "
            f"MACs: {mac_share:.2f}% of dense"
        )
        if self.pattern:
            lines.append(self.pattern[:1].upper() + self.pattern[1:])
        for r in self.attention_layers:
            lines.append(f"Heads: {r.name}: {r.live_heads} / {r.heads} live")
        if self.tokens:
            lines.append(
                f"MACs per token ({self.tokens} tokens): {self.macs_per_token:,.0f} / "
                f"{self.dense_macs_per_token:,.0f} dense"
            )
        return "\n".join(lines)


def _listify(shape):
    if shape and isinstance(shape[0], tuple):
        return [list(s) for s in shape]
    return list(shape)


def sparsity_report(
    model: ModelLike, *, sequence_length: int | None = None, strict: bool = False
) -> SparsityReport:
    """Counts nonzero weights, live units and MACs of `model`, as in the paper's tables.

    Kernel layers are those of `deephoyer_tf.supported_layer_types()` (Dense,
    Conv, ...), including layers wrapped by TFMOT's ``PruneLowMagnitude``
    (their masked kernel is read). For Sequential and functional models (of
    either Keras flavour, nested models included), liveness follows the layer
    graph: a unit is live when it lies on a path of nonzero weights from the
    inputs to the outputs, through Flatten, pooling, BatchNormalization, Add,
    Concatenate and other layers. For a subclassed model each layer is
    judged alone (live inputs and outputs are its nonzero input and output
    groups) and Conv MACs need the layer's output shape.

    MACs: Dense ``live_in * live_out`` (per position); Conv
    ``positions * kernel positions * live_in * live_out``. Attention layers
    (`MultiHeadAttention`) count their projections and attention over live
    heads and dimensions (`deephoyer_tf.structure.attention.describe_attention`);
    their rows give ``heads`` and ``live_heads``, and the report
    `macs_per_token`.

    Layers holding trainable kernels that no registry entry covers are
    named in an `UnhandledLayerWarning` (a `ValueError` with ``strict=True``):
    their weights are not counted.

    Args:
        model: a built Keras model (Keras 3 or tf_keras).
        sequence_length: the number of tokens, for attention (and other
            token-wise) layers whose inputs have no fixed length.
        strict: raise instead of warning about unhandled layers.

    Returns:
        A `SparsityReport`. ``print(report)`` shows a table.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: `model` is not built, or has a channels-first kernel layer,
            or (``strict=True``) layers with kernels deephoyer_tf does not handle.

    Example: LeNet-300-100 with 353 live pixels and 45 and 11 live hidden units
    has ``report.structure == "353-45-11"`` and
    ``report.macs == 353 * 45 + 45 * 11 + 11 * 10 == 16490``.
    """
    flavours.check_model(model)
    if not model.built:
        raise ValueError(
            f"sparsity_report() needs a built model; model {model.name!r} is not "
            "built. Give it an Input (or call it on data) first."
        )
    if sequence_length is not None:
        sequence_length = validation.check_int(sequence_length, "sequence_length", minimum=1)
    validation.check_bool(strict, "strict")
    registry.check_unhandled(model, strict, "sparsity_report()")
    graph = graph_lib.build_graph(model)
    if graph is not None:
        return graph_report(model, liveness.Analysis(graph), sequence_length)
    if graph is None:
        rows = [
            _standalone_row(layer)
            if registry.flow_kind(layer) == "kernel"
            else _self_contained_row(
                graph_lib.Op(layer, "opaque", graph_lib.type_name(layer), layer.name, [], [], 0),
                sequence_length,
            )
            for layer in flavours.flat_layers(model)
            if registry.layer_type(layer) is not None
        ]
        rows = [r for r in rows if r is not None]
        structure = _structure(rows)
        return SparsityReport(rows, structure, model.name, str(patterns.pattern_summary(model)))


def graph_report(model, analysis, sequence_length=None) -> SparsityReport:
    """The `SparsityReport` of a graph model from its `liveness.Analysis`.

    `sparsity_report` without its checks; `shrink` calls it with the analysis
    it has already made, so that the liveness is computed once. A layer
    called several times gets one row per call; the rows after the first are
    `LayerReport.repeated_call` (MACs counted, weights not).
    """
    graph = analysis.graph
    if sequence_length is None:
        sequence_length = _attention_length(graph)
    rows, seen = [], set()
    for op in graph.ops:
        if op.kind == "kernel":
            new = [_graph_row(op, analysis, sequence_length)]
        elif registry.layer_type(op.layer) is not None:
            new = [_self_contained_row(op, sequence_length)]
        else:
            new = _nested_rows(op, sequence_length)
        if id(op.layer) in seen:
            for row in new:
                row.repeated_call = True
        seen.add(id(op.layer))
        rows += new
    return SparsityReport(rows, _structure(rows), model.name, str(patterns.pattern_summary(model)))


def _nested_rows(op, sequence_length):
    """Rows of the kernel layers inside a layer that is not one (a custom block).

    Each is judged alone, as in a subclassed model (``owner/layer`` names);
    MACs need shapes the graph does not record inside the block, so they are
    unknown except for attention at a known ``sequence_length``.
    """
    rows = []
    for layer in registry.kernel_layers([op.layer]):
        if layer is op.layer:
            continue
        name = f"{op.name}/{layer.name}"
        if registry.flow_kind(layer) == "kernel":
            row = _standalone_row(layer)
            if row is not None:
                row.name = name
                rows.append(row)
        else:
            inner = graph_lib.Op(layer, "opaque", graph_lib.type_name(layer), name, [], [], 0)
            rows.append(_self_contained_row(inner, sequence_length))
    return rows


def _attention_length(graph):
    """The query length of the first attention layer with a known one (or None)."""
    for op in graph.ops:
        row_heads = op.kind == "opaque" and registry.layer_type(op.layer) == "MultiHeadAttention"
        if row_heads and op.inputs and op.inputs[0].shape is not None:
            dims = op.inputs[0].shape[:-1]
            if dims and all(d is not None for d in dims):
                return int(np.prod(dims))
    return None


def _self_contained_row(op, sequence_length):
    """Row of a kernel layer whose units the graph does not follow (attention...)."""
    entry = registry.entry_for(op.layer)
    if entry.describe is not None:
        return entry.describe(op, sequence_length)
    kernels = [liveness.kernel_values(op.layer, s) for s in registry.kernel_specs(op.layer)]
    n_in = op.inputs[0].units if op.inputs else 0
    n_out = op.outputs[0].units if op.outputs else 0
    ones_in, ones_out = np.ones(n_in, bool), np.ones(n_out, bool)
    return make_row(op.name, op.layer, kernels, ones_in, ones_out, dense_macs=0, macs=None)


def _dense_like(type_, kernel_shape):
    """A Dense layer, or a registered layer with one ``(in, out)`` kernel (not Embedding)."""
    if type_ == "Dense":
        return True
    return type_ != "Embedding" and len(kernel_shape) == 2 and isinstance(kernel_shape[0], int)


def _structure(rows):
    parts = []
    first_dense = next((r for r in rows if _dense_like(r.type, r.kernel_shape)), None)
    for k, r in enumerate(rows):
        if r is first_dense:
            parts.append(r.live_inputs)
        if k < len(rows) - 1:
            parts.append(r.live_outputs)
    return "-".join(str(p) for p in parts)


def _graph_row(op, analysis, sequence_length=None):
    live_in = analysis.live_inputs(op)
    live_out = analysis.live_outputs(op)
    out_shape = op.outputs[0].shape
    in_shape = op.inputs[0].shape
    return _row(op.name, op.layer, live_in, live_out, in_shape, out_shape, sequence_length)


def _standalone_row(layer):
    """Row of a layer judged alone (subclassed models)."""
    op = graph_lib.Op(layer, "kernel", graph_lib.type_name(layer), layer.name, [], [], 0)
    if any(registry.kernel_variable(layer, s) is None for s in registry.kernel_specs(layer)):
        return None  # not built
    m = liveness.kernel_connectivity(op)
    live_in = m.any(axis=1)
    live_out = m.any(axis=0)
    if op.type != "Embedding":
        live_in = m[:, live_out].any(axis=1)
        live_out = m[live_in].any(axis=0)
    in_shape, out_shape = _known_shapes(layer)
    return _row(layer.name, layer, live_in, live_out, in_shape, out_shape)


def _known_shapes(layer):
    shapes = []
    for attribute in ("input", "output"):
        try:
            shape = tuple(getattr(unwrap(layer), attribute).shape)[1:]
        except (AttributeError, ValueError, TypeError):
            shape = None
        shapes.append(shape)
    return shapes


def _positions(shape, sequence_length=None):
    """Product of the non-unit axes of `shape` (None if unknown).

    An unknown token axis (``shape == (None, units)``) counts `sequence_length`
    positions when it is given.
    """
    if shape is None:
        return None
    dims = list(shape[:-1])
    if any(d is None for d in dims):
        if sequence_length is None or len(dims) != 1:
            return None
        dims = [sequence_length]
    return int(np.prod(dims)) if dims else 1


def _row(name, layer, live_in, live_out, in_shape, out_shape, sequence_length=None):
    inner = unwrap(layer)
    type_ = graph_lib.type_name(layer)
    specs = registry.kernel_specs(inner)
    kernels = [liveness.kernel_values(layer, s) for s in specs]
    dense_macs, macs = _macs(
        type_, inner, kernels, live_in, live_out, in_shape, out_shape, sequence_length
    )
    return make_row(name, layer, kernels, live_in, live_out, dense_macs=dense_macs, macs=macs)


def _biases(layer):
    """The bias values of `layer`, flat (``bias`` with ``use_bias`` or ``bias_axes``)."""
    inner = unwrap(layer)
    use_bias = getattr(inner, "use_bias", None)
    if use_bias is None:  # EinsumDense: a bias when it has bias_axes
        use_bias = bool(getattr(inner, "bias_axes", None))
    bias = getattr(inner, "bias", None) if use_bias else None
    return np.zeros(0) if bias is None else np.asarray(bias.numpy()).reshape(-1)


def make_row(name, layer, kernels, live_in, live_out, *, dense_macs, macs, heads=None,
             live_heads=None, tokens=None, biases=None) -> LayerReport:
    """A `LayerReport` from a layer's kernel values and the liveness of its units.

    For registry `describe` functions (rows of layers the graph does not
    follow, such as attention); `biases`, the layer's bias values, default
    to its ``bias`` weight.
    """
    type_ = graph_lib.type_name(layer)
    bias = _biases(layer) if biases is None else np.asarray(biases).reshape(-1)
    kernel_shape = (
        tuple(kernels[0].shape) if len(kernels) == 1 else tuple(tuple(k.shape) for k in kernels)
    )
    n_in, n_out = len(live_in), len(live_out)
    li, lo = int(live_in.sum()), int(live_out.sum())
    total = sum(k.size for k in kernels)
    nonzero = sum(int(np.count_nonzero(k)) for k in kernels)
    return LayerReport(
        name=name,
        type=type_,
        kernel_shape=kernel_shape,
        kernel_weights=int(total),
        nonzero_weights=nonzero,
        density=nonzero / total if total else 0.0,
        inputs=n_in,
        outputs=n_out,
        live_inputs=li,
        live_outputs=lo,
        dense_macs=dense_macs,
        macs=macs,
        bias_weights=int(bias.size),
        nonzero_biases=int(np.count_nonzero(bias)),
        heads=heads,
        live_heads=live_heads,
        tokens=tokens,
    )


def _macs(type_, layer, kernels, live_in, live_out, in_shape, out_shape, sequence_length=None):
    """(dense MACs, live MACs) per example of one kernel layer."""
    if type_ == "Embedding":
        return 0, 0
    n_in, n_out = len(live_in), len(live_out)
    li, lo = int(live_in.sum()), int(live_out.sum())
    kernel = kernels[0]
    kpos = int(np.prod(kernel.shape[:-2])) if kernel.ndim > 2 else 1
    if type_.endswith("Transpose"):
        positions = _positions(in_shape, sequence_length)
        if positions is None:
            return 0, None
        return positions * kpos * n_in * n_out, positions * kpos * li * lo
    positions = _positions(out_shape, sequence_length)
    if positions is None:
        if not _dense_like(type_, kernel.shape):
            return 0, None
        positions = 1
    if type_.startswith("DepthwiseConv"):
        return positions * kpos * n_out, positions * kpos * lo
    if type_.startswith("SeparableConv"):
        depthwise, pointwise = kernels
        mult = depthwise.shape[-1]
        dw = np.any(depthwise != 0, axis=tuple(range(depthwise.ndim - 2))).reshape(-1)
        mid = dw & np.repeat(live_in, mult)
        mid &= np.any(pointwise[..., live_out] != 0, axis=tuple(range(pointwise.ndim - 2)) + (-1,))
        lm = int(mid.sum())
        dense = positions * (kpos * len(mid) + len(mid) * n_out)
        return dense, positions * (kpos * lm + lm * lo)
    groups = int(getattr(layer, "groups", 1) or 1)
    if groups == 1:
        return positions * kpos * n_in * n_out, positions * kpos * li * lo
    gi, go = n_in // groups, n_out // groups
    live = sum(
        int(live_in[g * gi : (g + 1) * gi].sum()) * int(live_out[g * go : (g + 1) * go].sum())
        for g in range(groups)
    )
    return positions * kpos * gi * n_out, positions * kpos * live
