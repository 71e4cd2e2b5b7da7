"""Magnitude pruning: the masks of the smallest weights, blocks or N:M groups.

`magnitude_masks` computes, for a list of kernels, the 0/1 masks that keep
the largest-magnitude weights (or blocks, scored by their mean ``|w|``) so
that a fraction `sparsity` is zero, per kernel (``scope="layer"``) or over
all kernels together (``scope="global"``); with ``m_by_n=(m, n)`` it keeps
the ``n - m`` largest of every ``n`` consecutive inputs instead (the sparsity
is then ``m / n``, whatever the schedule says, as TFMOT's ``sparsity_m_by_n``).
Kept counts: ``max(1, round(groups * (1 - sparsity)))`` per kernel (TFMOT's
rounding), exactly, ties going to the earlier position.

`apply_masks` zeroes the pruned weights and holds them with the `ZeroMask`
constraints (`deephoyer_tf.sparsity.zero_mask`): a mask is set to exactly the
new pattern, so zeros are held after every optimizer step until the next
update. `prune_magnitude` is the one-shot public form.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import validation
from deephoyer_tf.sparsity import kernels as kernels_lib
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import patterns
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.report import sparsity_report

if TYPE_CHECKING:
    from typing import Any
    from typing import Sequence

SCOPES = ("layer", "global")


@dataclasses.dataclass(frozen=True)
class PruningPattern:
    """What `magnitude_masks` removes: single weights, blocks or N:M groups.

    Args:
        scope: ``"layer"`` (each kernel to the sparsity) or ``"global"`` (one
            ranking over all kernels).
        block_size: ``(rows along outputs, cols along inputs)``; ``(1, 1)``
            is single weights.
        m_by_n: ``(m, n)``: m zeros in every n consecutive inputs, or None.
    """

    scope: str = "layer"
    block_size: tuple = (1, 1)
    m_by_n: tuple | None = None

    def __post_init__(self) -> None:
        validation.check_choice(self.scope, "scope", SCOPES)
        object.__setattr__(self, "block_size", patterns.check_block_size(self.block_size))
        object.__setattr__(self, "m_by_n", patterns.check_m_by_n(self.m_by_n))
        if self.m_by_n is not None and self.block_size != (1, 1):
            raise ValueError(
                "Arguments `block_size` and `m_by_n` exclude each other: N:M groups are "
                f"of single weights. Received: block_size={self.block_size}, m_by_n={self.m_by_n}"
            )

    @property
    def structured(self) -> bool:
        return self.m_by_n is not None or self.block_size != (1, 1)

    def describe(self) -> str:
        if self.m_by_n is not None:
            return patterns.pattern_name("m_by_n", self.m_by_n)
        if self.block_size != (1, 1):
            return patterns.pattern_name("blocks", self.block_size)
        return "weights"


@dataclasses.dataclass
class Kernel:
    """One kernel to prune: its layer, variable, layout and value (NumPy)."""

    ref: Any
    layout: str
    value: np.ndarray

    @property
    def name(self) -> str:
        return f"kernel of layer {self.ref.layer.name!r}"


def collect(model, types, pattern: PruningPattern) -> list[Kernel]:
    """The `Kernel`s of `types` in `model` with their current values."""
    found = []
    for ref in kernels_lib.model_kernels(model, types):
        layout = next(
            spec.layout for spec, var in registry.kernels(ref.layer) if var is ref.variable
        )
        value = patterns.to_numpy(ref.variable)
        if pattern.structured:
            what = pattern.describe()
            patterns.check_layout(layout, f"The kernel of layer {ref.layer.name!r}", value.shape, what)
        found.append(Kernel(ref, layout, value))
    return found


def _scores(kernel, pattern):
    if pattern.block_size == (1, 1):
        return np.abs(kernel.value).astype(np.float64)
    return patterns.block_scores(kernel.value, kernel.layout, pattern.block_size)


def _keep_top(scores, keep):
    flat = scores.reshape(-1)
    order = np.argsort(-flat, kind="stable")
    mask = np.zeros(flat.shape, dtype=bool)
    mask[order[:keep]] = True
    return mask.reshape(scores.shape)


def _keep_count(groups, sparsity):
    return max(1, int(round(groups * (1.0 - sparsity))))


def _expand(kernel, keep, pattern):
    if pattern.block_size == (1, 1):
        return keep
    return patterns.expand_blocks(keep, kernel.layout, pattern.block_size, kernel.value.shape)


def magnitude_masks(kernels: Sequence[Kernel], sparsity: float, pattern: PruningPattern) -> list:
    """The boolean keep-masks (one per kernel, of its shape) for `sparsity`."""
    if pattern.m_by_n is not None:
        return [patterns.m_by_n_keep(k.value, k.layout, pattern.m_by_n) for k in kernels]
    scores = [_scores(k, pattern) for k in kernels]
    if pattern.scope == "layer":
        keeps = [_keep_top(s, _keep_count(s.size, sparsity)) for s in scores]
    else:
        flat = np.concatenate([s.reshape(-1) for s in scores]) if scores else np.zeros(0)
        keep = _keep_top(flat, _keep_count(flat.size, sparsity)) if flat.size else flat
        keeps, start = [], 0
        for s in scores:
            keeps.append(keep[start : start + s.size].reshape(s.shape))
            start += s.size
    return [_expand(k, keep, pattern) for k, keep in zip(kernels, keeps)]


def apply_masks(model, types, kernels: Sequence[Kernel], masks) -> None:
    """Zeroes the pruned weights and sets each kernel's `ZeroMask` to its mask.

    Attaches the masks where a kernel has none yet (`zero_mask.hold_zeros`,
    which makes `fit` retrace); else assigns the mask variables in place and
    retraces where the backend froze them into the compiled step (JAX).
    """
    attached = all(zero_mask.is_fixed(k.ref.variable) for k in kernels)
    with kernels_lib.strategy_scope(model):
        for kernel, keep in zip(kernels, masks):
            value = np.where(keep, kernel.value, 0).astype(kernel.value.dtype)
            kernel.ref.variable.assign(value)
            kernel.value = value
    if not attached:
        zero_mask.hold_zeros(model, types)  # attaches masks = (w != 0) and retraces
    with kernels_lib.strategy_scope(model):
        for kernel, keep in zip(kernels, masks):
            mask = kernel.ref.variable.constraint.mask
            mask.assign(keep.astype(kernel.value.dtype))
    if attached:
        zero_mask.retrace_after_refresh(model, True)


def prune_magnitude(
    model: Any,
    sparsity: float,
    *,
    layer_types: Sequence[str] | str | None = None,
    scope: str = "layer",
    block_size: Sequence[int] = (1, 1),
    m_by_n: Sequence[int] | None = None,
) -> Any:
    """Sets the smallest-magnitude weights (or blocks, or N:M groups) of `model` to 0, once.

    The one-shot form of `deephoyer_tf.MagnitudePruning`: keeps
    ``max(1, round(n * (1 - sparsity)))`` of the ``n`` weights (blocks) of
    each kernel, ranked by ``|w|`` (mean ``|w|`` of a block), or of all
    kernels together with ``scope="global"``; with ``m_by_n=(m, n)``, the
    ``n - m`` largest of every ``n`` consecutive inputs (`sparsity` is then
    not used). In place; no masks are attached: call `deephoyer_tf.fix_zeros`
    to hold the zeros while fine-tuning.

    Args:
        model: a built Keras model (Keras 3 or tf_keras).
        sparsity: fraction of zeros, in [0, 1).
        layer_types: the layer types pruned (default: Dense, Conv and
            registered custom layers, as `deephoyer_tf.prune`).
        scope: ``"layer"`` or ``"global"``.
        block_size: ``(rows, cols)`` in TFLite's ``(outputs, inputs)``
            orientation: ``(1, 4)`` for float, ``(1, 16)`` for int8 sparse
            fully connected kernels.
        m_by_n: ``(m, n)``, m zeros in every n consecutive inputs (TFMOT's
            ``sparsity_m_by_n``), such as ``(2, 4)``.

    Returns:
        The `SparsityReport` of the pruned model.

    Example::

        deephoyer_tf.prune_magnitude(model, 0.9, block_size=(1, 4))
        deephoyer_tf.fix_zeros(model)
    """
    flavours.check_model(model)
    pattern = PruningPattern(scope, tuple(block_size), None if m_by_n is None else tuple(m_by_n))
    sparsity = validation.check_float(sparsity, "sparsity")
    if not sparsity < 1.0:
        raise ValueError(
            f"Invalid value for argument `sparsity`. Expected a float in [0, 1). "
            f"Received: sparsity={sparsity!r}"
        )
    types = registry.check_layer_types(layer_types)
    kernels = collect(model, types, pattern)
    masks = magnitude_masks(kernels, sparsity, pattern)
    with kernels_lib.strategy_scope(model):
        for kernel, keep in zip(kernels, masks):
            kernel.ref.variable.assign(np.where(keep, kernel.value, 0).astype(kernel.value.dtype))
    return sparsity_report(model)
