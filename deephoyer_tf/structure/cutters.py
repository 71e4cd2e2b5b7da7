"""How one layer is cut: the cutters and constant folders `shrink` applies per layer kind.

A cutter has the signature ``cutter(layer, cut) -> (config, weights)``: given
the layer and a `Cut` (which units of each input and output tensor the shrunk
model keeps), it returns the config and weights of the smaller layer, which
`shrink` builds with ``type(layer).from_config(config)``. Cutters are attached
to layer classes in the registry (`deephoyer_tf.register_layer(...,
cutter=...)`); the built-in ones are below.

A fold function (kernel layers only) says how constant input units reach the
outputs, so that `shrink` can fold removed constants into the next bias:
``fold(layer, values, kernel) -> contributions`` (see `fold_dense`).
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING
from typing import List
from typing import Optional

import numpy as np

if TYPE_CHECKING:
    from typing import Any
    from typing import Dict
    from typing import Tuple

    LayerLike = Any  # a Keras 3 or tf_keras layer


@dataclasses.dataclass
class Cut:
    """The units a cut layer keeps.

    Attributes:
        keep_inputs: per input tensor, a Boolean vector over its units (last
            axis): the units the cut layer reads.
        keep_outputs: per output tensor, the units the cut layer produces.
        input_shapes, output_shapes: the original shapes, batch axis excluded.
        bias_delta: kernel layers: a vector added to the biases of the kept
            outputs (constants of removed inputs folded in), or None.
    """

    keep_inputs: List[np.ndarray]
    keep_outputs: List[np.ndarray]
    input_shapes: List[tuple]
    output_shapes: List[tuple]
    bias_delta: Optional[np.ndarray] = None


def cut_kernel_layer(layer: LayerLike, cut: Cut) -> Tuple[Dict[str, Any], List[np.ndarray]]:
    """Dense and Conv: kernel ``(k..., in, out)`` and optional bias sliced.

    A grouped convolution (``groups > 1``, kernel ``(k..., in/groups, out)``)
    keeps its kept groups, each with as many inputs and outputs as the others
    (``groups`` becomes the number of kept groups).

    For a layer whose config has ``units`` (Dense) or ``filters`` (Conv) and
    whose weights are ``[kernel]`` or ``[kernel, bias]``: ``units``/``filters``
    becomes the number of kept outputs; a folded `bias_delta` is added to the
    bias (a layer without bias gets one, through ``use_bias``, when the delta
    is nonzero).
    """
    keep_in, keep_out = cut.keep_inputs[0], cut.keep_outputs[0]
    kernel, *rest = [np.asarray(w) for w in layer.get_weights()]
    config = layer.get_config()
    key = "units" if "units" in config else "filters"
    config[key] = int(keep_out.sum())
    groups = config.get("groups", 1)
    if isinstance(groups, int) and groups > 1:
        kernel, config["groups"] = _cut_groups(layer, kernel, keep_in, keep_out, groups)
    else:
        kernel = kernel[..., keep_in, :][..., keep_out]
    bias = rest[0][keep_out] if rest else np.zeros(int(keep_out.sum()), kernel.dtype)
    delta = cut.bias_delta
    if delta is not None:
        bias = bias + delta.astype(bias.dtype)
    if rest or (delta is not None and np.any(delta)):
        if not rest and "use_bias" not in config:
            raise ValueError(
                f"shrink() must fold constants into a bias of layer {layer.name!r}, which "
                "has no bias and no `use_bias` argument; register the layer with a "
                "cutter of its own, or without a `fold` function."
            )
        if "use_bias" in config:
            config["use_bias"] = True
        return config, [kernel, bias]
    return config, [kernel]


def _cut_groups(layer, kernel, keep_in, keep_out, groups):
    """Grouped kernel ``(k..., in/groups, out)`` cut to the kept groups: (kernel, groups).

    Every kept group (one with a kept output) must keep as many inputs, and
    as many outputs, as the others (see `deephoyer_tf.structure.liveness.group_cut`).
    """
    ins = np.asarray(keep_in, bool).reshape(groups, -1)
    outs = np.asarray(keep_out, bool).reshape(groups, -1)
    kept = np.flatnonzero(outs.any(axis=1))
    n_in, n_out = {int(ins[g].sum()) for g in kept}, {int(outs[g].sum()) for g in kept}
    if len(n_in) != 1 or len(n_out) != 1 or 0 in n_in:
        raise ValueError(
            f"Cannot cut grouped convolution {layer.name!r} (groups={groups}): its kept "
            f"groups must keep equal numbers of inputs and of outputs. Received: inputs per "
            f"group {sorted(n_in)}, outputs per group {sorted(n_out)}"
        )
    og = outs.shape[1]
    blocks = [
        kernel[..., ins[g], :][..., g * og : (g + 1) * og][..., outs[g]] for g in kept
    ]
    return np.concatenate(blocks, axis=-1), len(kept)


def cut_depthwise(layer, cut):
    """DepthwiseConv1D/2D ``(k..., in, multiplier)``: whole input channels removed.

    The kept outputs are every ``c * multiplier + k`` of the kept input
    channels ``c``; the bias (``in * multiplier``) is sliced to match.
    """
    keep_in = cut.keep_inputs[0]
    kernel, *rest = [np.asarray(w) for w in layer.get_weights()]
    weights = [kernel[..., keep_in, :]]
    if rest:
        multiplier = kernel.shape[-1]
        weights.append(rest[0].reshape(-1, multiplier)[keep_in].reshape(-1))
    return layer.get_config(), weights


def cut_separable(layer, cut):
    """SeparableConv1D/2D: input channels (depthwise and pointwise rows) and filters."""
    keep_in, keep_out = cut.keep_inputs[0], cut.keep_outputs[0]
    depthwise, pointwise, *rest = [np.asarray(w) for w in layer.get_weights()]
    multiplier = depthwise.shape[-1]
    rows = np.repeat(keep_in, multiplier)
    weights = [depthwise[..., keep_in, :], pointwise[..., rows, :][..., keep_out]]
    config = {**layer.get_config(), "filters": int(keep_out.sum())}
    if rest:
        bias = rest[0][keep_out]
        if cut.bias_delta is not None:
            bias = bias + cut.bias_delta.astype(bias.dtype)
        weights.append(bias)
    elif cut.bias_delta is not None and np.any(cut.bias_delta):
        config["use_bias"] = True
        weights.append(cut.bias_delta.astype(pointwise.dtype))
    return config, weights


def cut_channelwise(layer, cut):
    """Channel-wise layers: every weight whose last axis spans the units is sliced."""
    keep = cut.keep_inputs[0]
    units = cut.input_shapes[0][-1]
    weights = [
        np.asarray(w)[..., keep] if np.ndim(w) and np.shape(w)[-1] == units else np.asarray(w)
        for w in layer.get_weights()
    ]
    return layer.get_config(), weights


def cut_reshape(layer, cut):
    """Flatten keeps its config; Reshape gets the new unit count."""
    n_in = int(cut.keep_inputs[0].sum())
    n_out = int(cut.keep_outputs[0].sum())
    shape_in, shape_out = cut.input_shapes[0], cut.output_shapes[0]
    config = layer.get_config()
    if "target_shape" in config:
        target = tuple(shape_out)
        if len(target) == 1:
            target = (int(np.prod(shape_in[:-1])) * n_in,)
        else:
            target = target[:-1] + (n_out,)
        config["target_shape"] = target
    return config, layer.get_weights()


def call_again(layer, cut):
    """Weightless operations (``x + 3.0``): called again as recorded, on the cut inputs.

    Returns ``(None, None)``, which tells `shrink` to call the same operation
    with the arguments of its original call, input tensors replaced.
    """
    return None, None


def cut_embedding(layer: LayerLike, cut: Cut) -> Tuple[Dict[str, Any], List[np.ndarray]]:
    """Embedding: the table ``(vocabulary, dim)`` keeps the columns of its kept outputs.

    Every token id is kept (its input is ids, not units).
    """
    keep_out = cut.keep_outputs[0]
    config = layer.get_config()
    config["output_dim"] = int(keep_out.sum())
    weights = [np.asarray(w) for w in layer.get_weights()]
    return config, [weights[0][:, keep_out]] + weights[1:]


def copy_layer(layer, cut):
    """Layers with no per-unit weights (merges, or layers kept whole): a plain copy."""
    return layer.get_config(), layer.get_weights()


# --- constant folding ------------------------------------------------------------


def fold_dense(layer: LayerLike, x: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Per input unit ``i`` and output ``j`` of a Dense layer, ``x[..., i] * W[i, j]``.

    Args:
        x: ``(1, positions..., U)`` input values of U units.
        kernel: ``(U, n)`` their kernel rows.

    Returns:
        ``(1, positions..., U * n)``, channel ``i * n + j``.
    """
    products = x[..., :, None] * kernel[None, ...].reshape((1,) * (x.ndim - 1) + kernel.shape)
    return products.reshape(products.shape[:-2] + (-1,))


def fold_conv(layer, x, kernel):
    """Per input unit ``i`` and output ``j`` of a Conv1D/2D/3D, the convolution of ``x[..., i]``.

    Args:
        x: ``(1, positions..., U)`` input values of U units.
        kernel: ``(k..., U, n)`` their kernel slices.

    Returns:
        ``(1, out positions..., U * n)``, channel ``i * n + j``.
    """
    import tensorflow as tf

    rank = kernel.ndim - 2
    strides = tuple(layer.strides)
    dilations = tuple(layer.dilation_rate)
    padding = layer.padding
    x = tf.constant(x, tf.float32)
    k = tf.constant(kernel, tf.float32)
    if padding == "causal":
        x = tf.pad(x, [[0, 0], [dilations[0] * (kernel.shape[0] - 1), 0], [0, 0]])
        padding = "valid"
    if rank == 1:  # as a 2D convolution of height 1
        x, k = x[:, None], k[None]
        strides, dilations = (1,) + strides, (1,) + dilations
    if rank <= 2:
        y = tf.nn.depthwise_conv2d(
            x, k, strides=(1,) + strides + (1,), padding=padding.upper(), dilations=dilations
        )
        if rank == 1:
            y = y[:, 0]
        return y.numpy()
    outs = [
        tf.nn.convolution(
            x[..., i : i + 1],
            k[..., i : i + 1, :],
            strides=strides,
            padding=padding.upper(),
            dilations=dilations,
        )
        for i in range(kernel.shape[-2])
    ]
    return tf.concat(outs, axis=-1).numpy()
