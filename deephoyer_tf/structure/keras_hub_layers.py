"""keras_hub's transformer blocks in the registry: `shrink` removes dead heads and feed-forward units.

Imported on first sight of a keras_hub layer (`registry.entry_for`), never
otherwise: importing deephoyer_tf does not import keras_hub.

A block (``TransformerEncoder``, ``TransformerDecoder``, ``GemmaDecoderBlock``,
``LlamaTransformerDecoder``, ``QwenTransformerDecoder``...) is opaque to the
layer graph: its input and output are the residual stream and keep every
unit. Inside it, `cut_block` removes

* dead attention heads. Query head ``h`` contributes nothing when its rows of
  the output projection are zero, or the value projection of its key/value
  head is zero (kernel and bias); when only the value kernel is zero, the
  head adds the constant ``b_V @ O[h]`` (each softmax row sums to one), folded
  into the output bias where there is one. With grouped-query attention
  (``num_query_heads = G * num_key_value_heads``, query head ``h`` reading
  key/value head ``h // G``) the ratio must stay whole: a key/value head goes
  with all its query heads, and otherwise the same number of dead query heads
  goes from every kept group (``G' = G - k``);
* dead feed-forward units: unit ``f`` contributes nothing when the row ``f`` of
  the output projection is zero, or (gated ``act(x W_g) * (x W_u)``) a zero
  column of ``W_u``, or of ``W_g`` with ``act(0) = 0``; ungated
  (``act(x W_1 + b_1)``), a zero column of ``W_1`` makes the unit the constant
  ``act(b_1[f])``, folded into the output projection's bias (kept where it
  has none).

Head and value dimensions are kept. Blocks whose head size is derived from
``hidden_dim // num_heads`` (``TransformerEncoder``, ``TransformerDecoder``,
``LlamaTransformerDecoder``...) become a subclass that stores the head size
(`HeadSizedTransformerEncoder`...), serializable under the ``deephoyer_tf``
package, so the shrunk model saves and loads (`deephoyer_tf.load_model`).
Other keras_hub layers with weights (embeddings, ``ViTEncoder``, which holds
all of ViT's blocks in one layer) are kept whole and named in
``shrink_summary.kept_whole``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Optional
from typing import Tuple

import keras
import keras_hub
import numpy as np

from deephoyer_tf._internal import private_api
from deephoyer_tf.structure import attention as attention_lib
from deephoyer_tf.structure import registry


@dataclasses.dataclass(frozen=True)
class BlockSpec:
    """Where a transformer block keeps its attention and feed-forward layers.

    Attributes:
        attention: attribute of the block holding its self-attention layer.
        projections: ``(query, key, value, output)`` attributes of the
            attention layer (`EinsumDense` layers), or None for a Keras
            `MultiHeadAttention`.
        heads_key, kv_heads_key: config keys of the number of query heads and
            of key/value heads (None: as many as query heads).
        writers: attributes of the feed-forward input projections; with two,
            the first is the gate (activation `gate_activation`), the second
            the linear branch.
        reader: attribute of the feed-forward output projection.
        units_key: config key of the feed-forward width; `units_scale`: the
            width is ``units_scale *`` the number of units (Gemma: 2).
        activation: ``activation(layer) -> callable``: the nonlinearity on the
            first writer.
        head_size_key: for a block that derives the head size from
            ``hidden_dim // heads``: the config key its head-sized subclass
            adds; None when the head size is in the config already.
    """

    attention: str
    projections: Optional[Tuple[str, str, str, str]]
    heads_key: str
    kv_heads_key: Optional[str]
    writers: Tuple[str, ...]
    reader: str
    units_key: str
    units_scale: int = 1
    activation: object = None
    head_size_key: Optional[str] = None


def _layer_activation(attribute):
    def get(block):
        return keras.activations.get(getattr(_attr(block, attribute), "activation", None))

    return get


def _gelu_approximate(block):
    return lambda x: keras.activations.gelu(x, approximate=True)


def _attr(obj, path):
    for part in path.split("."):
        obj = getattr(obj, part)
    return obj


def _numpy(variable):
    return np.asarray(keras.ops.convert_to_numpy(variable))


# --- the blocks' head-sized subclasses ----------------------------------------------


def _init_config(block, cls):
    """The config of `block` read from the attributes named like `cls`'s constructor arguments.

    For blocks whose own ``get_config`` fails (keras_hub 0.32's
    `LlamaTransformerDecoder` reads an attribute it never sets).
    """
    import inspect

    config = keras.layers.Layer.get_config(block)
    for name, parameter in inspect.signature(cls.__init__).parameters.items():
        if name == "self" or parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        if not hasattr(block, name):
            continue
        value = getattr(block, name)
        if isinstance(value, keras.initializers.Initializer):
            value = keras.initializers.serialize(value)
        elif callable(value):
            value = keras.activations.serialize(value)
        config[name] = value
    return config


def block_config(block, cls=None):
    """``block.get_config()``, or `_init_config` where the block's own fails."""
    cls = cls or type(block)
    try:
        return cls.get_config(block)
    except AttributeError:
        return _init_config(block, cls)


def _resize_attention(block, attribute, key_dim, query_shape, value_shape):
    """Replaces `block`'s built `MultiHeadAttention` by one of head size `key_dim`."""
    old = getattr(block, attribute)
    if private_api.attention_settings(old)[1] == key_dim:
        return
    config = old.get_config()
    config["key_dim"] = key_dim
    config["value_dim"] = key_dim
    new = type(old).from_config(config)
    new.build(query_shape=query_shape, value_shape=value_shape)
    private_api.replace_sublayer(block, attribute, new)


@keras.saving.register_keras_serializable(package="deephoyer_tf")
class HeadSizedTransformerEncoder(keras_hub.layers.TransformerEncoder):
    """keras_hub's `TransformerEncoder` with ``key_dim`` heads (not ``hidden_dim // num_heads``).

    What `shrink` makes of a `TransformerEncoder` that lost heads.
    """

    def __init__(self, *args, key_dim=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_dim = key_dim

    def build(self, inputs_shape):
        super().build(inputs_shape)
        if self.key_dim is not None:
            _resize_attention(self, "_self_attention_layer", self.key_dim, inputs_shape, inputs_shape)

    def get_config(self):
        config = super().get_config()
        config["key_dim"] = self.key_dim
        return config


@keras.saving.register_keras_serializable(package="deephoyer_tf")
class HeadSizedTransformerDecoder(keras_hub.layers.TransformerDecoder):
    """keras_hub's `TransformerDecoder` whose self-attention has ``key_dim`` heads.

    What `shrink` makes of a `TransformerDecoder` whose self-attention lost
    heads (its cross-attention, if any, is kept whole).
    """

    def __init__(self, *args, key_dim=None, decoder_sequence_shape=None,
                 encoder_sequence_shape=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.key_dim = key_dim
        if decoder_sequence_shape is not None:  # what the parent's constructor does, after key_dim
            self.build(decoder_sequence_shape, encoder_sequence_shape)

    def build(self, decoder_sequence_shape, encoder_sequence_shape=None):
        super().build(decoder_sequence_shape, encoder_sequence_shape)
        if self.key_dim is not None:
            _resize_attention(self, "_self_attention_layer", self.key_dim,
                              decoder_sequence_shape, decoder_sequence_shape)

    def get_config(self):
        config = super().get_config()
        config["key_dim"] = self.key_dim
        return config


def _head_sized(base, attention_attribute):
    """A subclass of keras_hub decoder `base` whose attention keeps a stored ``head_dim``.

    Its attention layer computes the head size from ``hidden_dim //
    num_query_heads`` when it builds; the subclass rebuilds the four
    projections with the stored size and the matching score scale.
    """

    def __init__(self, *args, head_dim=None, **kwargs):
        base.__init__(self, *args, **kwargs)
        self.head_dim = head_dim

    @functools.wraps(base.build)  # Keras reads the shape arguments' names from the signature
    def build(self, *args, **kwargs):
        base.build(self, *args, **kwargs)
        if self.head_dim is not None:
            _resize_einsum_attention(getattr(self, attention_attribute), self.head_dim)

    def get_config(self):
        config = block_config(self, base)
        config["head_dim"] = self.head_dim
        return config

    name = f"HeadSized{base.__name__}"
    cls = type(name, (base,), {"__init__": __init__, "build": build, "get_config": get_config,
                               "__module__": __name__, "__doc__": f"keras_hub's `{base.__name__}`"
                               " with a stored head size: what `shrink` makes of one that lost heads."})
    return keras.saving.register_keras_serializable(package="deephoyer_tf")(cls)


_EINSUM_ROLES = ("_query_dense", "_key_dense", "_value_dense", "_output_dense")


def _resize_einsum_attention(attention, head_dim):
    """Llama/Qwen-style attention: the projections rebuilt with `head_dim` per head."""
    query = attention._query_dense
    if int(query.kernel.shape[-1]) == head_dim:
        return
    hidden = int(query.kernel.shape[0])
    for role in _EINSUM_ROLES:
        old = getattr(attention, role)
        config = old.get_config()
        shape = list(config["output_shape"])
        if role != "_output_dense":
            shape[-1] = head_dim
        config["output_shape"] = shape
        new = type(old).from_config(config)
        with keras.name_scope(attention.name):  # its weights' paths: block/attention/role/...
            if role == "_output_dense":
                new.build((None, None, attention.num_query_heads, head_dim))
            else:
                new.build((None, None, hidden))
        private_api.replace_sublayer(attention, role, new)
    attention._inv_norm_factor = 1.0 / np.sqrt(head_dim)


# --- liveness -----------------------------------------------------------------------


def _head_letter_axes(layer, role):
    """``(kernel axis, bias axis or None)`` of the heads in projection `layer`."""
    inp, kernel, out = attention_lib.parse_equation(layer.equation)
    letter = inp[-2] if role == "output" else out[-2]
    bias_letters = attention_lib._bias_letters(layer)
    bias_axis = bias_letters.index(letter) if letter in bias_letters else None
    return kernel.index(letter), bias_axis


def _projections(block, spec):
    attention = _attr(block, spec.attention)
    if spec.projections is None:
        found = attention_lib.attention_projections(attention)
        return {role: found[role] for role in ("query", "key", "value", "output")}
    return dict(zip(("query", "key", "value", "output"), (getattr(attention, a) for a in spec.projections)))


def _bias(layer):
    bias = getattr(layer, "bias", None)
    return None if bias is None else _numpy(bias)


@dataclasses.dataclass
class BlockLiveness:
    """What of a block `cut_block` keeps.

    Attributes:
        query_heads: Boolean ``(num_query_heads,)``: the query heads kept.
        kv_heads: Boolean ``(num_key_value_heads,)``: the key/value heads kept.
        constant_heads: Boolean ``(num_query_heads,)``: removed heads whose
            constant output is folded into the output bias.
        units: Boolean ``(units,)``: the feed-forward units kept.
        constant_units: Boolean ``(units,)``: removed units whose constant is
            folded into the output projection's bias.
        dead_heads, dead_units: how many query heads and units contribute
            nothing (some may be kept to keep the head ratio whole).
    """

    query_heads: np.ndarray
    kv_heads: np.ndarray
    constant_heads: np.ndarray
    units: np.ndarray
    constant_units: np.ndarray
    dead_heads: int
    dead_units: int


def _head_liveness(block, spec):
    """Per query head: dead (contributes nothing) and constant (a foldable constant)."""
    p = _projections(block, spec)
    v, o = p["value"], p["output"]
    vk = np.moveaxis(_numpy(v.kernel), _head_letter_axes(v, "value")[0], 0)
    vb_axis = _head_letter_axes(v, "value")[1]
    vb = _bias(v)
    vb = None if vb is None else np.moveaxis(vb, vb_axis, 0)
    ok = np.moveaxis(_numpy(o.kernel), _head_letter_axes(o, "output")[0], 0)
    has_output_bias = _bias(o) is not None
    nq, nkv = ok.shape[0], vk.shape[0]
    group = nq // nkv
    dead = np.zeros(nq, bool)
    constant = np.zeros(nq, bool)
    for h in range(nq):
        g = h // group
        if not np.any(ok[h]):
            dead[h] = True
        elif not np.any(vk[g]):
            if vb is None or not np.any(vb[g]):
                dead[h] = True
            elif has_output_bias:
                dead[h] = constant[h] = True
    return dead, constant, nkv


def _choose_heads(dead, nkv):
    """The query and key/value heads kept, with the query/key-value ratio whole."""
    nq = dead.size
    group = nq // nkv
    per_group = dead.reshape(nkv, group)
    kv_keep = ~per_group.all(axis=1)
    if not kv_keep.any():
        kv_keep[0] = True
    drop = min(group - 1, int(per_group[kv_keep].sum(axis=1).min()))
    query_keep = np.zeros((nkv, group), bool)
    for g in np.flatnonzero(kv_keep):
        dead_here = np.flatnonzero(per_group[g])[:drop]
        query_keep[g] = True
        query_keep[g, dead_here] = False
    return query_keep.reshape(-1), kv_keep


def _unit_liveness(block, spec):
    """Per feed-forward unit: dead, and constant (foldable into the reader's bias)."""
    writers = [_attr(block, a) for a in spec.writers]
    reader = _attr(block, spec.reader)
    rk = _numpy(reader.kernel)
    n = rk.shape[0]
    row_zero = ~np.any(rk.reshape(n, -1) != 0, axis=1)
    dead = row_zero.copy()
    constant = np.zeros(n, bool)
    activation = spec.activation(block)
    for k, writer in enumerate(writers):
        column_zero = ~np.any(_numpy(writer.kernel).reshape(-1, n) != 0, axis=0)
        bias = _bias(writer)
        bias = np.zeros(n, "float32") if bias is None else bias.reshape(-1)
        if len(writers) == 1:
            # the unit is the constant act(b[f])
            values = np.asarray(keras.ops.convert_to_numpy(activation(bias.astype("float32"))))
            silent = column_zero & (values == 0)
            fold = column_zero & ~silent & ~row_zero & (_bias(reader) is not None)
            dead |= silent | fold
            constant |= fold
        elif k == 0:
            # the gate: act(b[f]) times the linear branch, zero only when act(b[f]) is
            values = np.asarray(keras.ops.convert_to_numpy(activation(bias.astype("float32"))))
            dead |= column_zero & (values == 0)
        else:
            dead |= column_zero & (bias == 0)
    return dead, constant


def block_liveness(block, spec=None) -> BlockLiveness:
    """The `BlockLiveness` of a built keras_hub block (see the module docstring)."""
    spec = spec or spec_for(block)
    dead, constant, nkv = _head_liveness(block, spec)
    query_keep, kv_keep = _choose_heads(dead, nkv)
    units_dead, units_constant = _unit_liveness(block, spec)
    units = ~units_dead
    if not units.any():
        units = units.copy()
        units[0] = True
    return BlockLiveness(
        query_heads=query_keep,
        kv_heads=kv_keep,
        constant_heads=constant & ~query_keep,
        units=units,
        constant_units=units_constant & ~units,
        dead_heads=int(dead.sum()),
        dead_units=int(units_dead.sum()),
    )


def group_kernels(block):
    """The kernel groups of `block` that `shrink` removes, for group regularizers.

    Returns:
        ``(heads, units)``: `heads` a list of ``([(variable, head axis)],
        number of heads)``, one for the query and output projections (per
        query head) and one for the key and value projections (per key/value
        head), empty for a block whose attention is a `MultiHeadAttention`
        (grouped by head as such); `units` ``[(variable, unit axis)]``, the
        feed-forward writers' columns then the reader's rows.
    """
    spec = spec_for(block)
    if not _spec_applies(block, spec):
        return [], []
    heads = []
    if spec.projections is not None:
        p = _projections(block, spec)
        axes = {role: _head_letter_axes(layer, role)[0] for role, layer in p.items()}
        for roles in (("query", "output"), ("key", "value")):
            count = int(p[roles[0]].kernel.shape[axes[roles[0]]])
            heads.append(([(p[r].kernel, axes[r]) for r in roles], count))
    units = [(_attr(block, a).kernel, -1) for a in spec.writers]
    units.append((_attr(block, spec.reader).kernel, 0))
    return heads, units


# --- cutting --------------------------------------------------------------------------


class LayerConfig(dict):
    """A config for another class than the layer's own (`shrink` builds `layer_class`)."""

    def __init__(self, config, layer_class):
        super().__init__(config)
        self.layer_class = layer_class


def _sliced(block, spec, live):
    """``{id(variable): new value}`` for the variables of `block` that lose entries."""
    values = {}
    p = _projections(block, spec)
    group = live.query_heads.size // live.kv_heads.size
    for role, layer in p.items():
        keep = live.kv_heads if role in ("key", "value") else live.query_heads
        if role in ("key", "value") and spec.kv_heads_key is None:
            keep = live.query_heads  # plain multi-head attention: one key/value head per query head
        axis, bias_axis = _head_letter_axes(layer, role)
        values[id(layer.kernel)] = np.compress(keep, _numpy(layer.kernel), axis=axis)
        bias = _bias(layer)
        if bias is not None and bias_axis is not None:
            values[id(layer.bias)] = np.compress(keep, bias, axis=bias_axis)
        elif bias is not None and role == "output" and live.constant_heads.any():
            v = p["value"]
            v_axis, vb_axis = _head_letter_axes(v, "value")
            vb = np.moveaxis(_bias(v), vb_axis, 0)
            ok = np.moveaxis(_numpy(layer.kernel), axis, 0)
            heads = np.flatnonzero(live.constant_heads)
            kv = heads // group if spec.kv_heads_key is not None else heads
            fold = np.einsum("he,he...->...", vb[kv], ok[heads])
            values[id(layer.bias)] = bias + fold.reshape(bias.shape).astype(bias.dtype)
    keep = live.units
    for attribute in spec.writers:
        writer = _attr(block, attribute)
        values[id(writer.kernel)] = _numpy(writer.kernel)[..., keep]
        if _bias(writer) is not None:
            values[id(writer.bias)] = _bias(writer)[..., keep]
    reader = _attr(block, spec.reader)
    rk = _numpy(reader.kernel)
    values[id(reader.kernel)] = rk[keep]
    rb = _bias(reader)
    if rb is not None and live.constant_units.any():
        writer = _attr(block, spec.writers[0])
        wb = _bias(writer)
        idx = np.flatnonzero(live.constant_units)
        act = np.asarray(keras.ops.convert_to_numpy(spec.activation(block)(wb[idx].astype("float32"))))
        values[id(reader.bias)] = rb + (act @ rk[idx].reshape(idx.size, -1)).reshape(rb.shape).astype(rb.dtype)
    return values


def _relative(path, name):
    return path[len(name) + 1:] if path.startswith(name + "/") else path


def cut_block(block, cut):
    """`shrink`'s cutter of a keras_hub transformer block: dead heads and units removed inside.

    Its input and output (the residual stream) keep every unit. The new block
    has the kept query and key/value heads and feed-forward units; its
    weights are the original's, sliced, with constants folded into biases,
    so its outputs equal the original's.
    """
    spec = spec_for(block)
    if not _spec_applies(block, spec):
        return copy_kept_whole(block, cut)
    live = block_liveness(block, spec)
    config = block_config(block)
    layer_class = type(block)
    head_size = None
    if spec.head_size_key is not None:
        q = _projections(block, spec)["query"]
        head_size = int(_numpy(q.kernel).shape[-1])
        layer_class = _HEAD_SIZED.get(type(block), type(block))
        config[spec.head_size_key] = head_size
    config[spec.heads_key] = int(live.query_heads.sum())
    if spec.kv_heads_key is not None:
        config[spec.kv_heads_key] = int(live.kv_heads.sum())
    config[spec.units_key] = int(live.units.sum()) * spec.units_scale
    values = _sliced(block, spec, live)
    by_path = {_relative(v.path, block.name): values.get(id(v), None) for v in block.weights}
    originals = {_relative(v.path, block.name): v for v in block.weights}
    probe = layer_class.from_config(config)
    if not probe.built:  # (TransformerDecoder builds in its constructor, from its config)
        probe.build((None,) + tuple(cut.input_shapes[0]))  # the residual stream (others: masks)
    weights = []
    for variable in probe.weights:
        key = _relative(variable.path, probe.name)
        if key not in originals:
            raise ValueError(
                f"shrink() cannot cut layer {block.name!r} ({type(block).__name__}): the cut "
                f"block has a weight {key!r} the original does not have."
            )
        value = by_path[key]
        weights.append(_numpy(originals[key]) if value is None else value)
    return LayerConfig(config, layer_class), weights


def describe_block(block):
    """Why `shrink` keeps `block`'s input and output whole, and what it cuts inside."""
    if not _spec_applies(block, spec_for(block)):
        return (f"{type(block).__name__}: kept whole (its attention and feed-forward layers are "
                f"not the ones of the keras_hub block it derives from)")
    live = block_liveness(block)
    return (f"{type(block).__name__}: its input and output (the residual stream) keep every "
            f"unit; inside, {int(live.query_heads.sum())}/{live.query_heads.size} query heads, "
            f"{int(live.kv_heads.sum())}/{live.kv_heads.size} key/value heads and "
            f"{int(live.units.sum())}/{live.units.size} feed-forward units are kept")


cut_block.kept_whole_reason = describe_block
cut_block.group_kernels = group_kernels


# --- registration -----------------------------------------------------------------------


_SPECS = {}
_HEAD_SIZED = {}


def _spec_applies(block, spec):
    """`block` (maybe a subclass) has the built layers `spec` names."""
    try:
        _projections(block, spec)
        for path in spec.writers + (spec.reader,):
            _attr(block, path).kernel  # noqa: B018 (the attribute must exist)
    except (AttributeError, KeyError):
        return False
    return True


def spec_for(block) -> BlockSpec:
    for cls in type(block).__mro__:
        if cls in _SPECS:
            return _SPECS[cls]
    raise ValueError(f"Layer {block.name!r} ({type(block).__name__}) is not a known keras_hub block.")


def _find(path):
    """A keras_hub class by its module path under ``keras_hub.src``, or None."""
    import importlib

    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(f"keras_hub.src.{module}"), name)
    except (ImportError, AttributeError):
        return None


_MHA_SPEC = dict(attention="_self_attention_layer", projections=None, heads_key="num_heads",
                 kv_heads_key=None, writers=("_feedforward_intermediate_dense",),
                 reader="_feedforward_output_dense", units_key="intermediate_dim",
                 activation=_layer_activation("_feedforward_intermediate_dense"),
                 head_size_key="key_dim")
_GATED_SPEC = dict(attention="_self_attention_layer", projections=_EINSUM_ROLES,
                   heads_key="num_query_heads", kv_heads_key="num_key_value_heads",
                   writers=("_feedforward_gate_dense", "_feedforward_intermediate_dense"),
                   reader="_feedforward_output_dense", units_key="intermediate_dim",
                   activation=_layer_activation("_feedforward_gate_dense"), head_size_key="head_dim")

_BLOCKS = {
    "layers.modeling.transformer_encoder.TransformerEncoder": (_MHA_SPEC, HeadSizedTransformerEncoder),
    "layers.modeling.transformer_decoder.TransformerDecoder": (_MHA_SPEC, HeadSizedTransformerDecoder),
    "models.gemma.gemma_decoder_block.GemmaDecoderBlock": (dict(
        attention="attention",
        projections=("query_dense", "key_dense", "value_dense", "output_dense"),
        heads_key="num_query_heads", kv_heads_key="num_key_value_heads",
        writers=("gating_ffw", "gating_ffw_2"), reader="ffw_linear", units_key="intermediate_dim",
        units_scale=2, activation=_gelu_approximate,
    ), None),
    "models.llama.llama_decoder.LlamaTransformerDecoder": (_GATED_SPEC, "_self_attention_layer"),
    "models.qwen.qwen_decoder.QwenTransformerDecoder": (_GATED_SPEC, "_self_attention_layer"),
    "models.mistral.mistral_transformer_decoder.MistralTransformerDecoder": (_GATED_SPEC,
                                                                             "_self_attention_layer"),
}

# keras_hub layers with weights that `shrink` keeps whole (copied).
_KEPT_WHOLE = (
    "layers.modeling.position_embedding.PositionEmbedding",
    "layers.modeling.token_and_position_embedding.TokenAndPositionEmbedding",
    "layers.modeling.rotary_embedding.RotaryEmbedding",
    "models.vit.vit_layers.ViTPatchingAndEmbedding",
    "models.vit.vit_layers.ViTEncoder",
    "models.llama.llama_layernorm.LlamaLayerNorm",
    "models.qwen.qwen_layernorm.QwenLayerNorm",
    "models.gemma.rms_normalization.RMSNormalization",
    "layers.modeling.rms_normalization.RMSNormalization",
    "models.mistral.mistral_layer_norm.MistralLayerNormalization",
)


def copy_kept_whole(layer, cut):
    """`shrink`'s cutter of the keras_hub layers kept whole: a copy, config and weights.

    The config keeps the keys the layer's constructor takes (keras_hub
    0.32's `ViTPatchingAndEmbedding` adds some it then refuses).
    """
    import inspect

    config = block_config(layer)
    parameters = inspect.signature(type(layer).__init__).parameters
    accepted = set(parameters) | set(keras.layers.Layer.get_config(layer))
    config = {key: value for key, value in config.items() if key in accepted}
    return config, layer.get_weights()


def _kept_whole_reason(layer):
    name = type(layer).__name__
    if name == "ViTEncoder":
        return ("ViTEncoder holds all of ViT's blocks in one layer, whose config gives them one "
                "number of heads and one MLP width: kept whole")
    return f"{name}, a keras_hub layer that mixes (or embeds into) every unit of the residual stream"


copy_kept_whole.kept_whole_reason = _kept_whole_reason


def _register():
    for path, (spec_args, sized) in _BLOCKS.items():
        cls = _find(path)
        if cls is None:
            continue
        spec = BlockSpec(**spec_args)
        if isinstance(sized, str):  # the attribute of its attention layer
            _HEAD_SIZED[cls] = _head_sized(cls, sized)
        elif sized is not None:
            _HEAD_SIZED[cls] = sized
        _SPECS[cls] = spec
        registry.register_layer(cls, kind="opaque", cutter=cut_block)
    for path in _KEPT_WHOLE:
        cls = _find(path)
        if cls is not None:
            registry.register_layer(cls, kind="opaque", cutter=copy_kept_whole)


_register()
