"""Structured sparsity patterns of a kernel: 1xc blocks and N:M groups (NumPy).

Both patterns are defined on the kernel seen as TFLite stores a fully
connected weight, a matrix ``(outputs, inputs)``: a Keras ``Dense`` kernel
``(in, out)`` is read transposed, a convolution kernel ``(k..., in, out)`` as
one such matrix per kernel position ``k...``.

* Blocks, ``block_size=(r, c)``: ``r`` consecutive outputs by ``c`` consecutive
  inputs. TFLite's sparse ``FULLY_CONNECTED`` kernels read float weights in
  1x4 blocks and int8 weights in 1x16 blocks, along the input axis. A kernel
  has the pattern when every zero lies in an all-zero block (the last block of
  a row or column may be partial).
* N:M groups, ``m_by_n=(m, n)`` (TFMOT's ``sparsity_m_by_n``): at least ``m``
  zeros in every ``n`` consecutive inputs of one output (2:4 is what Ampere
  GPUs run); a partial last group of ``g < n`` inputs needs
  ``max(0, g - (n - m))`` zeros.

Only kernels whose layout (`registry.LAYOUTS`) has one input and one output
axis (``"in_out"``, ``"out_in"``) have these patterns. `pattern_summary` says
which patterns a model's kernels have; `sparsity_report` shows it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np
from keras import ops

from deephoyer_tf._internal import backend
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import Sequence

PATTERN_LAYOUTS = ("in_out", "out_in")

# Patterns `pattern_summary` looks for, most structured first.
KNOWN_PATTERNS = (("blocks", (1, 16)), ("blocks", (1, 4)), ("m_by_n", (2, 4)))


def check_block_size(value: Any, name: str = "block_size") -> tuple[int, int]:
    """`value` as a pair of positive ints ``(rows, cols)``, or a clear error."""
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in value)
    ):
        raise TypeError(
            f"Invalid type for argument `{name}`. Expected a pair of ints "
            f"(rows along the outputs, columns along the inputs), such as (1, 4). "
            f"Received: {name}={value!r}"
        )
    if min(value) < 1:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected two ints >= 1. "
            f"Received: {name}={tuple(value)!r}"
        )
    return int(value[0]), int(value[1])


def check_m_by_n(value: Any, name: str = "m_by_n") -> tuple[int, int] | None:
    """`value` as ``(m, n)`` with ``0 < m < n``, or None; a clear error otherwise."""
    if value is None:
        return None
    m, n = check_block_size(value, name)
    if m >= n:
        raise ValueError(
            f"Invalid value for argument `{name}`. Expected (m, n) with m < n: m "
            f"zeros in every n consecutive inputs, such as (2, 4). Received: {name}={(m, n)!r}"
        )
    return m, n


def check_layout(layout: str, what: str, shape: Sequence[int], pattern: str) -> None:
    """Raises ValueError naming the kernel when `layout` has no block/N:M view."""
    if layout not in PATTERN_LAYOUTS:
        raise ValueError(
            f"{what} (shape {tuple(shape)}, layout {layout!r}) cannot take {pattern}: "
            f"only kernels of layouts {PATTERN_LAYOUTS} (Dense, Conv) have one input and "
            "one output axis. Leave this layer type out with `layer_types`."
        )


def to_matrices(w: np.ndarray, layout: str) -> np.ndarray:
    """The kernel as ``(positions, outputs, inputs)``; `from_matrices` inverts it."""
    w = np.asarray(w)
    if layout == "in_out":
        w = np.swapaxes(w, -1, -2)
    return w.reshape((-1,) + w.shape[-2:])


def from_matrices(m: np.ndarray, layout: str, shape: Sequence[int]) -> np.ndarray:
    """Inverse of `to_matrices` for a kernel of `shape`."""
    shape = tuple(shape)
    if layout == "in_out":
        m = m.reshape(shape[:-2] + (shape[-1], shape[-2]))
        return np.swapaxes(m, -1, -2)
    return m.reshape(shape)


def _pad(m, rows, cols, value):
    pr = (-m.shape[1]) % rows
    pc = (-m.shape[2]) % cols
    if pr or pc:
        m = np.pad(m, ((0, 0), (0, pr), (0, pc)), constant_values=value)
    return m


def _blocks(m, block):
    r, c = block
    p, o, i = m.shape
    return m.reshape(p, o // r, r, i // c, c)


def block_scores(w: np.ndarray, layout: str, block: tuple[int, int]) -> np.ndarray:
    """Mean ``|w|`` of each block (real elements only), shape ``(P, ceil(out/r), ceil(in/c))``.

    TFMOT's ``block_pooling_type="AVG"``.
    """
    m = to_matrices(np.abs(w), layout)
    sums = _blocks(_pad(m, *block, 0.0), block).sum(axis=(2, 4))
    counts = _blocks(_pad(np.ones_like(m[:1]), *block, 0.0), block).sum(axis=(2, 4))
    return sums / counts


def expand_blocks(keep: np.ndarray, layout: str, block: tuple[int, int], shape) -> np.ndarray:
    """A per-block 0/1 array of `block_scores`' shape, as a mask of the kernel's `shape`."""
    r, c = block
    full = np.repeat(np.repeat(keep, r, axis=1), c, axis=2)
    m = to_matrices(np.empty(shape, dtype=np.int8), layout)
    return from_matrices(full[:, : m.shape[1], : m.shape[2]], layout, shape)


def m_by_n_keep(w: np.ndarray, layout: str, m_by_n: tuple[int, int]) -> np.ndarray:
    """The 0/1 mask keeping the ``n - m`` largest ``|w|`` of every ``n`` consecutive inputs.

    Ties go to the earlier input. A partial last group keeps its largest
    ``min(g, n - m)``.
    """
    m_zeros, n = m_by_n
    mat = to_matrices(np.abs(w).astype(np.float64), layout)
    padded = _pad(mat, 1, n, -1.0)  # padding ranks below every real |w|
    groups = padded.reshape(padded.shape[0], padded.shape[1], -1, n)
    order = np.argsort(-groups, axis=-1, kind="stable")
    keep = np.zeros(groups.shape, dtype=bool)
    np.put_along_axis(keep, order[..., : n - m_zeros], True, axis=-1)
    keep = keep.reshape(padded.shape)[:, :, : mat.shape[2]]
    return from_matrices(keep, layout, np.shape(w))


def violations(w: np.ndarray, layout: str, kind: str, size: tuple[int, int]) -> tuple[int, int]:
    """``(groups, violating groups)`` of the pattern (`kind`, `size`) in kernel `w`.

    ``kind="blocks"``: a block violates when it holds both zeros and nonzeros.
    ``kind="m_by_n"``: a group violates when it has fewer zeros than required.
    """
    zero = to_matrices(np.asarray(w) == 0, layout)
    if kind == "blocks":
        z = _blocks(_pad(zero.astype(np.int64), *size, 1), size).sum(axis=(2, 4))
        real = _blocks(_pad(np.ones_like(zero[:1], dtype=np.int64), *size, 0), size).sum(axis=(2, 4))
        total = np.prod(size)
        # padding counts as zero; a block is fine when it is all zero or has no real zeros
        partial = (z < total) & (z > total - real)
        return int(partial.size), int(partial.sum())
    m_zeros, n = size
    padded = _pad(zero.astype(np.int64), 1, n, 1)
    zeros = padded.reshape(padded.shape[0], padded.shape[1], -1, n).sum(axis=-1)
    return int(zeros.size), int((zeros < m_zeros).sum())


@dataclasses.dataclass(frozen=True)
class PatternSummary:
    """Which structured patterns the (sparse) kernels of a model have.

    Attributes:
        kernels: number of kernels of layouts ``"in_out"``/``"out_in"`` that
            have zeros.
        holding: ``{pattern name: number of those kernels whose every group
            satisfies it}``, for ``"1x16 blocks"``, ``"1x4 blocks"``, ``"2:4"``.
    """

    kernels: int
    holding: dict

    @property
    def pattern(self) -> str | None:
        """The most structured pattern every sparse kernel satisfies, or None."""
        for name, count in self.holding.items():
            if self.kernels and count == self.kernels:
                return name
        return None

    def __str__(self) -> str:
        if not self.kernels:
            return "pattern: none (no sparse Dense/Conv kernels)"
        if self.pattern is not None:
            return f"pattern: {self.pattern}, every group of all {self.kernels} sparse kernels"
        parts = [f"{name} in {count}" for name, count in self.holding.items() if count]
        found = ", ".join(parts) if parts else "no block or 2:4 pattern in any"
        return f"pattern: unstructured ({found} of {self.kernels} sparse kernels)"


def to_numpy(variable) -> np.ndarray:
    """A kernel variable (either Keras flavour, any backend) as a NumPy array."""
    return np.asarray(ops.convert_to_numpy(backend.to_tensor(variable)))


def pattern_name(kind: str, size: tuple[int, int]) -> str:
    """``"1x4 blocks"`` or ``"2:4"`` (m zeros of n: n - m kept of n)."""
    if kind == "blocks":
        return f"{size[0]}x{size[1]} blocks"
    return f"{size[1] - size[0]}:{size[1]}"


def summarize(kernels: Sequence[tuple[np.ndarray, str]]) -> PatternSummary:
    """`PatternSummary` of `kernels`, pairs ``(array, layout)``."""
    sparse = [(w, layout) for w, layout in kernels if layout in PATTERN_LAYOUTS and np.any(w == 0)]
    holding = {}
    for kind, size in KNOWN_PATTERNS:
        holding[pattern_name(kind, size)] = sum(
            violations(w, layout, kind, size)[1] == 0 for w, layout in sparse
        )
    return PatternSummary(len(sparse), holding)


def pattern_summary(model: Any) -> PatternSummary:
    """Which block or N:M patterns the sparse kernels of `model` satisfy, group by group.

    Looks at every Dense/Conv-like kernel (layouts ``"in_out"``,
    ``"out_in"``) that has zeros, and counts those whose every 1x16 block,
    every 1x4 block (each all zero or free of zeros) and every group of 4
    consecutive inputs (at least 2 zeros: 2:4) satisfies the pattern.
    `sparsity_report` shows it as its ``pattern`` line.

    Example::

        deephoyer_tf.prune_magnitude(model, 0.9, block_size=(1, 4))
        str(deephoyer_tf.pattern_summary(model))
        # 'pattern: 1x4 blocks, every group of all 3 sparse kernels'
    """
    kernels = []
    for layer in registry.kernel_layers(model):
        for spec, variable in registry.kernels(registry.unwrap(layer)):
            kernels.append((to_numpy(variable), spec.layout))
    return summarize(kernels)
