"""`shrink`: structural surgery that removes dead units from a model.

Group-HS (paper, eq. 8) leaves whole neurons, filters and channels at zero;
`shrink` makes them disappear, returning a smaller model with the same
outputs. The algorithm is split by question:

* *what to cut*: the zero groups of each kernel (`liveness.kernel_connectivity`)
  give the live units (`liveness.Analysis`);
* *what must be cut together*: `liveness.demand` / `liveness.physical` keep
  channels coupled through Add, Concatenate, Flatten and channel-wise layers
  consistent;
* *how one layer is cut*: the cutter of its registry entry
  (`deephoyer_tf.structure.cutters`);
* *exactness*: a removed unit whose value does not depend on the input (a
  constant, such as a dead filter's bias through ReLU or a BatchNormalization
  beta) has its contribution folded into the bias of the next kernel layer,
  when that contribution is the same at every position; otherwise (a
  constant channel entering a zero-padded 3x3 convolution) the unit is kept.
"""

from __future__ import annotations

import collections
import dataclasses
from typing import TYPE_CHECKING

import keras
import numpy as np

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import cutters
from deephoyer_tf.structure import graph as graph_lib
from deephoyer_tf.structure import liveness
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.cutters import Cut
from deephoyer_tf.structure.gather_units import gather_units_class
from deephoyer_tf.structure.report import graph_report

if TYPE_CHECKING:
    from typing import Any

    from deephoyer_tf.structure.report import SparsityReport

    ModelLike = Any  # a Keras 3 or tf_keras model


def supported_types():
    """Type names of the registered layers `shrink` can cut (those with a cutter), sorted."""
    return sorted({e.name for e in registry.registered_entries() if e.cutter is not None})


# --- summary -----------------------------------------------------------------


@dataclasses.dataclass
class ShrinkSummary:
    """What `shrink` did.

    Attributes:
        removed: dict layer name -> (input units removed, output units removed)
            for each kernel layer.
        kept_for_exactness: number of dead units kept because their constant
            output could not be folded exactly into the next layer's bias
            (e.g. a constant channel entering a zero-padded convolution).
        kept_for_exactness_units: list of (consumer layer name, input unit).
        kept_dead_outputs: dict layer name -> number of output units kept
            although not live (coupled through Add/Concatenate to a live
            unit, model outputs, or kept for exactness).
        kept_for_exactness_reasons: dict consumer layer name -> why its
            constant inputs could not be folded.
        kept_whole: dict layer name -> why its inputs and outputs keep every
            unit (a layer that mixes units, such as LayerNormalization over
            the channel axis, a softmax, a reshape that cannot be cut, or an
            operation with a per-channel constant; a layer `shrink` cannot
            cut: not in the registry, without a cutter, or shared by several
            calls).
        kept_for_groups: dict layer name -> how a grouped convolution was cut
            and how many dead units it keeps so that all its groups keep as
            many inputs and outputs (`liveness.group_cut`).
        folded: number of removed constant units whose contribution was
            folded into a bias (counted once per consuming layer).
        gathers: names of the `GatherUnits` layers inserted.
        report: `SparsityReport` of the original model.
    """

    removed: dict[str, tuple[int, int]]
    kept_for_exactness: int
    kept_for_exactness_units: list[tuple[str, int]]
    kept_dead_outputs: dict[str, int]
    folded: int
    gathers: list[str]
    report: SparsityReport
    kept_for_exactness_reasons: dict[str, str] = dataclasses.field(default_factory=dict)
    kept_whole: dict[str, str] = dataclasses.field(default_factory=dict)
    kept_for_groups: dict[str, str] = dataclasses.field(default_factory=dict)

    def __str__(self) -> str:
        lines = ["Shrink summary:"]
        for name, (ins, outs) in self.removed.items():
            lines.append(f"  {name}: removed {ins} input units, {outs} output units")
        lines.append(f"  constants folded into biases: {self.folded}")
        lines.append(f"  dead units kept for exactness (not foldable): {self.kept_for_exactness}")
        for name, why in self.kept_for_exactness_reasons.items():
            count = sum(1 for consumer, _ in self.kept_for_exactness_units if consumer == name)
            lines.append(f"    {name}: {count} input units kept: {why}")
        for name, why in self.kept_whole.items():
            lines.append(f"  {name}: every unit kept: {why}")
        for name, why in self.kept_for_groups.items():
            lines.append(f"  {name}: grouped convolution: {why}")
        kept = sum(self.kept_dead_outputs.values())
        lines.append(f"  dead output units kept (coupling, outputs, exactness): {kept}")
        lines.append(f"  gather layers inserted: {len(self.gathers)}")
        return "\n".join(lines)


# --- entry point -------------------------------------------------------------


def shrink(model: ModelLike) -> ModelLike:
    """Returns a smaller model with the dead units of `model` physically removed.

    A unit (Dense neuron or input feature, Conv filter or input channel) is
    dead when it lies on no path of nonzero kernel weights from the inputs to
    the outputs (see `deephoyer_tf.sparsity_report`). `shrink` removes dead
    units from the kernels, biases, BatchNormalization parameters and every
    layer in between (Flatten features included), so that the new model's
    live MACs equal its dense MACs; the outputs are unchanged (up to float
    rounding):

    * a removed unit that emits a constant (a bias through ReLU, a
      BatchNormalization beta) has its contribution folded into the next
      kernel layer's bias: ``b'_j = b_j + sum_i c_i * sum_k W[k, i, j]``;
      when that contribution differs between positions (a constant channel
      entering a zero-padded convolution) the unit is kept, unless its output
      is zero;
    * channels coupled by Add (and other merges) are removed only when dead
      in every producer, and then from all producers and consumers;
      Concatenate offsets channel indices;
    * a layer reading only some of its input's units (the live pixels of the
      first Dense layer, the live Flatten features) gets a `GatherUnits`
      layer in front, so the input signature stays the same.

    Nested models are inlined: the result is one functional model.

    Args:
        model: a built Sequential or functional model, Keras 3 or tf_keras,
            channels-last. Layers with a cutter in the layer registry
            (`deephoyer_tf.structure.surgery.supported_types()`; add your own
            with `deephoyer_tf.register_layer`) are cut; the others (and a
            layer called at several places) are kept whole, which is exact,
            and listed in ``shrink_summary.kept_whole``. Grouped
            convolutions are cut group by group (`liveness.group_cut`). Strip
            pruning wrappers first (`deephoyer_tf.strip_zero_masks`).

    Returns:
        The new, uncompiled model (same flavour). What was cut, folded or
        kept is its ``shrink_summary`` attribute, a `ShrinkSummary`.

    Raises:
        TypeError: `model` is not a Keras model.
        ValueError: `model` is subclassed or not built, or holds a TFMOT
            pruning wrapper, or a layer kept whole whose config does not
            round-trip through ``from_config`` (the message names the layer
            and its type).

    Example::

        small = deephoyer_tf.shrink(model)   # LeNet-300-100 "353-45-11"
        small.get_layer("fc1").kernel.shape  # (353, 45)
        print(small.shrink_summary)
    """
    flavours.check_model(model)
    if not flavours.is_graph_model(model) or not model.built:
        raise ValueError(
            f"shrink() needs a built Sequential or functional model; model "
            f"{model.name!r} of type {type(model).__name__} is "
            f"{'not built' if not model.built else 'subclassed'}."
        )
    graph = graph_lib.build_graph(model)
    if graph is None:
        raise ValueError(
            f"shrink() could not read the layer graph of model {model.name!r}; "
            "give it an Input first."
        )
    registry.check_unhandled(model, False, "shrink()")
    whole = _check_supported(graph)
    analysis = liveness.Analysis(graph)
    plan = _plan(analysis, frozenset(whole))
    new_model, gathers = _rebuild(model, graph, plan)
    summary = _summary(analysis, plan, gathers, model, whole)
    new_model.shrink_summary = summary
    return new_model


def _unsupported(op, why=""):
    shapes = [t.shape for t in op.inputs]
    return ValueError(
        f"shrink() cannot handle layer {op.name!r} of type {type(op.layer).__name__} "
        f"(input shapes {shapes}){why}."
    )


def _check_supported(graph):
    """The ops to keep whole, with why: ``{op: reason}``.

    A layer `shrink` cannot cut (not in the registry, no cutter, called at
    several places) is kept whole: its inputs and outputs keep every unit,
    which is exact. Only a TFMOT pruning wrapper is refused (its mask would
    be lost in the copy).
    """
    seen = collections.Counter(id(op.layer) for op in graph.ops)
    keep_all = {}
    for op in graph.ops:
        if registry.is_tfmot_wrapper(op.layer):
            raise _unsupported(
                op,
                ": strip the pruning wrapper first (strip_zero_masks or "
                "tfmot.sparsity.keras.strip_pruning)",
            )
        entry = registry.entry_for(op.layer)
        if entry is None:
            keep_all[op] = (
                "it is not in the layer registry (deephoyer_tf.register_layer), so its "
                "units cannot be followed: copied whole"
            )
        elif entry.cutter is None:
            keep_all[op] = f"the registry entry of {entry.name} has no cutter: copied whole"
        elif seen[id(op.layer)] > 1:
            keep_all[op] = (
                f"the layer is called at {seen[id(op.layer)]} places (shared): one copy, "
                "every unit kept"
            )
        elif op.kind == "opaque":
            keep_all[op] = None
        elif op.kind == "reshape" and not _reshape_cuttable(op):
            keep_all[op] = None
    return keep_all


def _reshape_cuttable(op):
    s_in, s_out = op.inputs[0].shape, op.outputs[0].shape
    return len(s_out) == 1 or (s_out[-1] == s_in[-1] and len(s_in) > 0)


# --- planning: what to keep, what to fold --------------------------------------


@dataclasses.dataclass
class _Plan:
    needs: dict  # kernel op -> input units kept
    demanded: dict  # tensor -> units that must exist
    physical: dict  # tensor -> units that exist
    deltas: dict  # kernel op -> bias change of its kept outputs (or None)
    forced: dict  # kernel op -> input units kept for exactness
    folded: int
    keep_all: frozenset


def _plan(analysis, keep_all):
    graph = analysis.graph
    kernels = graph.kernel_ops()
    # An Embedding reads token ids: its input is kept as it is.
    live_in = {
        op: np.ones(op.inputs[0].units, bool) if op.type == "Embedding" else analysis.live_inputs(op)
        for op in kernels
    }
    forced = {op: np.zeros(op.inputs[0].units, bool) for op in kernels}
    values = _probe(graph)
    for _ in range(len(kernels) + 2):
        needs = {}
        for op in kernels:
            need = live_in[op] | forced[op]
            if not need.any():
                need = need.copy()
                need[0] = True  # a layer keeps at least one input
            needs[op] = need
        demanded = liveness.demand(analysis, needs, keep_all)
        phys = liveness.physical(analysis, demanded, keep_all, needs)
        deltas, folded, changed = {}, 0, False
        for op in kernels:
            if op in keep_all:
                deltas[op] = None
                continue
            delta, new_forced, n_folded = _fold(op, analysis, values, needs[op], demanded)
            if new_forced.any():
                forced[op] |= new_forced
                changed = True
            deltas[op] = delta
            folded += n_folded
        if not changed:
            return _Plan(needs, demanded, phys, deltas, forced, folded, keep_all)
    raise RuntimeError("shrink(): constant folding did not converge")  # pragma: no cover


def _probe(graph):
    """Values of every tensor for an all-zero input (batch of one).

    Units that are not reached from the inputs through nonzero weights
    (`Analysis.fwd` False) hold the same value for every input.
    """
    values = {}
    for t, source in zip(graph.inputs, graph.source_inputs):
        dtype = getattr(source.dtype, "name", source.dtype)
        shape = tuple(1 if d is None else d for d in t.shape)
        values[t] = np.zeros((1,) + shape, dtype)
    for op in graph.ops:
        args = [values[t] for t in op.inputs]
        x = args if op.kind in ("merge", "concat") or len(args) > 1 else args[0]
        entry = registry.entry_for(op.layer)
        weightless = entry is not None and entry.cutter is cutters.call_again
        if weightless or _called_with_several(op):
            replacements = {id(src): arg for src, arg in zip(op.sources, args)}
            out = private_api.call_node_again(op.node, op.layer, replacements)
        else:
            out = op.layer(x, training=False)
        outs = out if isinstance(out, (list, tuple)) else [out]
        for t, y in zip(op.outputs, outs):
            # Any backend's tensor (a PyTorch one may require grad) as NumPy.
            values[t] = np.asarray(keras.ops.convert_to_numpy(y))
    return values


def _fold(op, analysis, values, need, demanded):
    """Bias change for `op`'s kept outputs from the constants of its removed inputs.

    The contribution of removed input unit ``i`` to kept output ``j`` is
    ``sum_k v_i[p + k] W[k, i, j]`` at output position ``p`` (``v_i``: the
    unit's input-independent value). It folds into bias ``j`` when it is the
    same at every position; otherwise unit ``i`` must be kept.

    Returns (delta or None, inputs that must be kept, number folded).
    """
    t = op.inputs[0]
    keep_out = demanded[op.outputs[0]]
    forced = np.zeros(t.units, bool)
    if graph_lib.is_channel_mapped(op):
        # A depthwise op drops an input channel only with all of its outputs.
        return None, forced, 0
    missing = ~need & ~analysis.fwd[t]
    value = values[t]
    nonzero = np.any(value.reshape(-1, t.units) != 0, axis=0)
    units = np.flatnonzero(missing & nonzero)
    if not len(units) or not keep_out.any():
        return None, forced, 0
    entry = registry.entry_for(op.layer)
    if entry.fold is None:
        # No fold function registered: the constants cannot be folded, keep them.
        forced[units] = True
        return None, forced, 0
    spec = entry.kernels[0]
    kernel = np.asarray(registry.kernel_variable(op.layer, spec).numpy())
    rows = _kernel_rows(kernel, liveness.conv_groups(op.layer), keep_out)
    delta = np.zeros(int(keep_out.sum()))
    folded = 0
    if _pointwise(op, kernel):
        # A unit equal at every position reaches every output position alike:
        # its contribution is value * W[i, :], with no per-position products.
        flat = value[..., units].reshape(-1, len(units))
        uniform = np.all(flat == flat[:1], axis=0)
        if uniform.any():
            part = units[uniform]
            row = rows(part).reshape(len(part), -1).astype(np.float64)
            delta += (flat[0, uniform].astype(np.float64)[:, None] * row).sum(axis=0)
            folded += len(part)
            units = units[~uniform]
    positions = max(1, int(np.prod(op.outputs[0].shape[:-1])))
    chunk = max(1, 4_000_000 // (positions * int(keep_out.sum())))
    for start in range(0, len(units), chunk):
        part = units[start : start + chunk]
        per_unit = entry.fold(op.layer, value[..., part], rows(part))
        per_unit = per_unit.reshape(-1, len(part), int(keep_out.sum())).astype(np.float64)
        spread = per_unit.max(axis=0) - per_unit.min(axis=0)
        scale = np.maximum(1.0, np.abs(per_unit).max(axis=(0, 2)))
        bad = np.any(spread > 1e-6 * scale[:, None], axis=1)
        forced[part[bad]] = True
        delta += per_unit[:, ~bad].mean(axis=0).sum(axis=0)
        folded += int((~bad).sum())
    return (delta if folded else None), forced, folded


def _pointwise(op, kernel):
    """A Dense or 1x1 convolution: each output position reads its own input position."""
    if op.type == "Dense" and kernel.ndim == 2:
        return True
    return op.type in ("Conv1D", "Conv2D", "Conv3D") and all(d == 1 for d in kernel.shape[:-2])


def _kernel_rows(kernel, groups, keep_out):
    """``rows(units) -> (k..., len(units), kept outputs)``: the kernel slices of input units.

    For a grouped convolution (kernel ``(k..., in/groups, out)``) input unit
    ``u`` of group ``g = u // (in/groups)`` reaches group g's outputs only: its
    slice is zero elsewhere.
    """
    if groups == 1:
        kept = kernel[..., keep_out]
        return lambda units: kept[..., units, :]
    cin, og = kernel.shape[-2], kernel.shape[-1] // groups
    out_group = np.arange(kernel.shape[-1])[keep_out] // og

    def rows(units):
        slices = kernel[..., units % cin, :][..., keep_out]
        mask = out_group[None, :] == (units // cin)[:, None]
        return slices * mask

    return rows


# --- rebuilding the model ------------------------------------------------------


def _rebuild(model, graph, plan):
    module = flavours.keras_module(model)
    gather_class = gather_units_class(module)
    names = collections.Counter(op.layer.name for op in graph.ops)
    used_names = set()
    gathers = []

    def unique(name):
        base = name.replace("/", "_")
        candidate, k = base, 1
        while candidate in used_names:
            candidate, k = f"{base}_{k}", k + 1
        used_names.add(candidate)
        return candidate

    for op in graph.ops:
        if names[op.layer.name] == 1:
            used_names.add(op.layer.name)

    new = {}
    inputs = []
    for t, source in zip(graph.inputs, graph.source_inputs):
        layer_name = private_api.history_layer(source).name
        x = module.Input(shape=t.shape, dtype=source.dtype, name=unique(layer_name))
        inputs.append(x)
        new[t] = x

    def select(t, want, where):
        x = new[t]
        have = plan.physical[t]
        if x is None or np.array_equal(have, want):
            return x
        if not want.any():
            return None
        indices = np.flatnonzero(want[have])
        name = unique(f"{where}_gather")
        gathers.append(name)
        return gather_class(indices.tolist(), name=name)(x)

    clones = {}  # id(layer) -> its copy, for a layer called at several places
    for op in graph.ops:
        layer = op.layer
        name = unique(layer.name) if names[layer.name] > 1 else layer.name
        entry = registry.entry_for(layer)
        cutter = entry.cutter if entry is not None and entry.cutter is not None else None
        if op in plan.keep_all:
            # kept whole: its own cutter with every unit kept, else a plain copy
            args = [new[t] for t in op.inputs]
            cutter = cutter or cutters.copy_layer
            config, weights = cutter(layer, _cut(op, plan, "physical"))
            _call(layer, config, weights, name, args, op, new, clones)
            continue
        if op.kind == "kernel":
            keep_out = plan.demanded[op.outputs[0]]
            if not keep_out.any():
                new[op.outputs[0]] = None
                continue
            x = select(op.inputs[0], plan.needs[op], name)
            grouped = liveness.conv_groups(layer) > 1
            outputs = "physical" if graph_lib.is_channel_mapped(op) or grouped else "demanded"
            cut = _cut(op, plan, outputs, keep_inputs=[plan.needs[op]], delta=plan.deltas[op])
            config, weights = cutter(layer, cut)
            _call(layer, config, weights, name, [x], op, new)
        elif op.kind in ("channelwise", "reshape"):
            t = op.inputs[0]
            if new[t] is None:
                new[op.outputs[0]] = None
                continue
            config, weights = cutter(layer, _cut(op, plan, "physical"))
            _call(layer, config, weights, name, [new[t]], op, new)
        elif op.kind == "merge":
            want = plan.demanded[op.outputs[0]]
            args = [select(t, want, f"{name}_{k}") for k, t in enumerate(op.inputs)]
            cut = _cut(op, plan, "demanded", keep_inputs=[want for _ in op.inputs])
            config, weights = cutter(layer, cut)
            _call(layer, config, weights, name, args, op, new)
        elif op.kind == "concat":
            want = plan.demanded[op.outputs[0]]
            offsets = liveness.concat_offsets(op)
            wants = [want[offsets[k] : offsets[k + 1]] for k in range(len(op.inputs))]
            args = [select(t, w, f"{name}_{k}") for k, (t, w) in enumerate(zip(op.inputs, wants))]
            args = [a for a in args if a is not None]
            if len(args) == 1:
                new[op.outputs[0]] = args[0]
                continue
            config, weights = cutter(layer, _cut(op, plan, "demanded", keep_inputs=wants))
            _call(layer, config, weights, name, args, op, new)
        else:  # pragma: no cover (kinds are exhaustive)
            raise _unsupported(op)
    outputs = [new[t] for t in graph.outputs]
    new_model = module.Model(
        _structured(model, "input", inputs),
        _structured(model, "output", outputs),
        name=f"{model.name}_shrunk",
    )
    return new_model, gathers


def _structured(model, which, tensors):
    """`tensors` in the structure of ``model.input`` / ``model.output`` (a dict stays a dict)."""
    import tensorflow as tf

    try:
        structure = getattr(model, which)
        if isinstance(structure, dict) and len(tf.nest.flatten(structure)) == len(tensors):
            flat = [id(t) for t in tf.nest.flatten(structure)]
            order = [id(t) for t in getattr(model, f"{which}s")]
            if sorted(flat) == sorted(order):
                by_id = dict(zip(order, tensors))
                return tf.nest.pack_sequence_as(structure, [by_id[i] for i in flat])
    except (AttributeError, ValueError):
        pass
    return tensors[0] if len(tensors) == 1 else tensors


def _cut(op, plan, outputs, keep_inputs=None, delta=None):
    """The `Cut` of `op`: inputs as they physically exist (or `keep_inputs`), outputs
    from the plan's `outputs` table (``"physical"`` or ``"demanded"``)."""
    table = getattr(plan, outputs)
    return Cut(
        keep_inputs=keep_inputs or [plan.physical[t] for t in op.inputs],
        keep_outputs=[table[t] for t in op.outputs],
        input_shapes=[t.shape for t in op.inputs],
        output_shapes=[t.shape for t in op.outputs],
        bias_delta=delta,
    )


def _call(layer, config, weights, name, args, op, new, clones=None):
    if any(a is None for a in args):
        raise _unsupported(op, ": all its input units are removed")
    if config is None:  # a weightless operation, called again as recorded
        replacements = {id(src): arg for src, arg in zip(op.sources, args)}
        y = private_api.call_node_again(op.node, layer, replacements)
        outs = y if isinstance(y, (list, tuple)) else [y]
        for t, v in zip(op.outputs, outs):
            new[t] = v
        return
    reused = clones is not None and id(layer) in clones
    if reused:
        clone = clones[id(layer)]
    else:
        layer_class = getattr(config, "layer_class", type(layer))  # a cutter may change the class
        config = dict(config)
        config["name"] = name
        # The weights are set right after the build: no random initialization
        # (a third of the time of shrink on Xception); the initializers are
        # put back after, so the clone's config is the original's.
        fast = [k for k, v in config.items() if weights and _initializer_key(layer, k, v)]
        try:
            clone = layer_class.from_config({**config, **{k: "zeros" for k in fast}})
        except Exception as error:  # a config that does not round-trip
            raise _unsupported(
                op, f": it cannot be copied (from_config raised {type(error).__name__}: {error})"
            ) from error
        if clones is not None:
            clones[id(layer)] = clone
    if _called_with_several(op):
        # e.g. attention(query, value): called as recorded, inputs replaced
        replacements = {id(src): arg for src, arg in zip(op.sources, args)}
        y = private_api.call_node_again(op.node, clone, replacements)
    else:
        y = clone(args if op.kind in ("merge", "concat") else args[0])
    if weights and not reused:
        clone.set_weights(weights)
        for key in fast:
            if hasattr(clone, key):
                setattr(clone, key, getattr(layer, key))
    outs = y if isinstance(y, (list, tuple)) else [y]
    for t, v in zip(op.outputs, outs):
        new[t] = v


def _initializer_key(layer, key, value):
    """A config entry naming an initializer the layer keeps under the same attribute."""
    if not key.endswith("_initializer") or value is None:
        return False
    attribute = getattr(layer, key, None)
    return attribute is not None and callable(attribute) and not isinstance(attribute, str)


def _called_with_several(op):
    """A layer (not a merge) called on several tensors, such as attention(query, value)."""
    return len(op.inputs) > 1 and op.kind not in ("merge", "concat") and op.node is not None


def _summary(analysis, plan, gathers, model, whole_reasons):
    removed, kept_dead, reasons, whole, grouping = {}, {}, {}, {}, {}
    forced_units = []
    for op in analysis.graph.kernel_ops():
        t, o = op.inputs[0], op.outputs[0]
        if op in plan.keep_all:
            removed[op.name] = (0, 0)
            kept_dead[op.name] = int((~analysis.live_outputs(op)).sum())
            continue
        grouped = liveness.conv_groups(op.layer) > 1
        keep_out = plan.physical[o] if grouped else plan.demanded[o]
        removed[op.name] = (int(t.units - plan.needs[op].sum()), int(o.units - keep_out.sum()))
        kept_dead[op.name] = int((keep_out & ~analysis.live_outputs(op)).sum())
        if grouped:
            note = _grouping_note(op, analysis, plan, keep_out)
            if note:
                grouping[op.name] = note
        forced_units += [(op.name, int(i)) for i in np.flatnonzero(plan.forced[op])]
        if plan.forced[op].any():
            entry = registry.entry_for(op.layer)
            reasons[op.name] = (
                f"no fold function is registered for {entry.name}"
                if entry.fold is None
                else "their constant values reach it differently at different positions "
                "(zero padding or image borders), so no bias can stand for them"
            )
    for op in plan.keep_all:
        if op.type == "InputLayer":
            continue
        entry = registry.entry_for(op.layer)
        if whole_reasons.get(op):
            why = whole_reasons[op]
        elif op.type == "LayerNormalization":
            dead = sum(int((~analysis.live(t)).sum()) for t in op.inputs)
            why = (
                "LayerNormalization normalizes over all its channels (removing one changes "
                "their mean and variance): they are kept together"
                + (f", {dead} dead channels among them" if dead else "")
            )
        elif op.kind == "reshape":
            why = "a reshape that moves units across the last axis"
        elif entry is not None and hasattr(entry.cutter, "kept_whole_reason"):
            why = entry.cutter.kept_whole_reason(op.layer)
        elif entry is not None and entry.kind == "opaque":
            why = f"{op.type} mixes the units of its input (it is registered as opaque)"
        else:
            why = f"{op.type} cannot be cut here (it mixes units, or broadcasts a per-unit constant)"
        whole[op.name] = why
    return ShrinkSummary(
        removed=removed,
        kept_for_exactness=len(forced_units),
        kept_for_exactness_units=forced_units,
        kept_dead_outputs=kept_dead,
        folded=plan.folded,
        gathers=gathers,
        report=graph_report(model, analysis),
        kept_for_exactness_reasons=reasons,
        kept_whole=whole,
        kept_for_groups=grouping,
    )


def _grouping_note(op, analysis, plan, keep_out):
    """Why a grouped convolution keeps dead units (None when it keeps none)."""
    groups = liveness.conv_groups(op.layer)
    need = plan.needs[op]
    live_in = analysis.live_inputs(op) | plan.forced[op]
    extra_in = int((need & ~live_in).sum())
    extra_out = int((keep_out & ~plan.demanded[op.outputs[0]]).sum())
    if not extra_in and not extra_out:
        return None
    kept = int(keep_out.reshape(groups, -1).any(axis=1).sum())
    per_in = int(need.sum()) // max(kept, 1)
    per_out = int(keep_out.sum()) // max(kept, 1)
    return (
        f"{kept} of {groups} groups kept, each with {per_in} inputs and {per_out} outputs: "
        f"{extra_in} dead inputs and {extra_out} dead outputs kept so that every group "
        "keeps as many as the others"
    )
