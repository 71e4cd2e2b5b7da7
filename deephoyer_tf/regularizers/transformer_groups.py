"""Group-HS and group lasso on transformers: a group per head, per hidden unit, per einsum unit.

A unit of a transformer can be removed only when every weight that computes
or reads it is zero, and those weights lie in several kernels:

* an attention **head** ``h`` lives in the query, key, value (and gate)
  kernels ``(d, heads, dim)`` at ``[:, h, :]`` and in the output kernel
  ``(heads, dim, d)`` at ``[h]``: `HeadGroups` makes one group of all of them,
  ``g_h = concat(Q[:, h], K[:, h], V[:, h], O[h])``;
* a **hidden unit** ``j`` of a feed-forward block is written by column ``j``
  of the first projection and read by row ``j`` of the second: `UnitGroups`
  makes one group of both, ``g_j = concat(W1[..., j], W2[..., j, :])``;
* an `EinsumDense` with another equation gets groups over its equation's
  output (or input) axes: `AxisGroups`.

Each is Group-HS, ``(sum_g ||g||_2)^2 / sum_g ||g||_2^2`` (paper, eq. 6), or
group lasso, ``sum_g ||g||_2``, and shares its strength variable with the
`GroupHoyerSquare` / `GroupLasso` it was made from (`StrengthSchedule`,
`ThresholdPruning` act on it). `deephoyer_tf.regularize` builds and links them.

How they are attached. A `MultiHeadAttention` hands one kernel regularizer to
all of its projections, so `HeadGroups` is that regularizer: called with the
query kernel it returns the penalty of every head across the linked kernels,
called with another linked kernel it returns 0 (so each head is counted
once). `UnitGroups` is the first projection's kernel regularizer and reads
the second's kernel itself, so the gradient reaches both.

Saving: linked kernels are variables of one model, not serializable. A
loaded `HeadGroups` (`UnitGroups`) is unlinked: until `regularize` links it
again it penalizes each kernel's heads (the writer's units) alone, and warns
once.

All computations use `keras.ops`: they run on every Keras backend.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

from keras import ops

from deephoyer_tf._internal import private_api
from deephoyer_tf._internal import validation
from deephoyer_tf.regularizers import measures
from deephoyer_tf.regularizers.regularizers import DeepHoyerRegularizer
from deephoyer_tf.regularizers.regularizers import GroupLasso
from deephoyer_tf.regularizers.regularizers import _register

if TYPE_CHECKING:
    from typing import Any
    from typing import Sequence
    from typing import Tuple

_KINDS = ("group_hs", "group_lasso")


def _kind_of(regularizer) -> str:
    return "group_lasso" if isinstance(regularizer, GroupLasso) else "group_hs"


def _float32(x):
    x = ops.convert_to_tensor(x)
    return x if str(x.dtype).endswith("float32") else ops.cast(x, "float32")


def group_matrix(kernel, axes: Sequence[int]):
    """``(groups, -1)``: `kernel` with the `axes` moved to the front and flattened into groups."""
    kernel = _float32(kernel)
    rank = len(kernel.shape)
    axes = [a % rank for a in axes]
    order = axes + [a for a in range(rank) if a not in axes]
    groups = 1
    for a in axes:
        groups *= int(kernel.shape[a])
    return ops.reshape(ops.transpose(kernel, order), (groups, -1))


def _group_measure(kind, matrix):
    if kind == "group_lasso":
        return measures.group_lasso(matrix, (0,))
    return measures.group_hoyer_square(matrix, (0,))


def _same(x, variable) -> bool:
    """`x` is `variable`, or the value the running (stateless) step holds for it."""
    return x is variable or x is private_api.current_value(variable)


class _LinkedGroups(DeepHoyerRegularizer):
    """Shared parts: the kind, the strength shared with a source regularizer, links."""

    def __init__(self, strength: float, kind: str) -> None:
        super().__init__(strength)
        self.kind = validation.check_choice(kind, "kind", _KINDS)
        self._linked = None  # [(variable, axis)] once linked
        self._warned = False

    def _share_strength(self, regularizer):
        self._strength = regularizer.strength_variables()[0]
        return self

    def link(self, kernels) -> None:
        """Links the kernels the groups span: a list of ``(variable, axis)``."""
        self._linked = [(variable, int(axis)) for variable, axis in kernels]

    @property
    def linked(self) -> bool:
        return self._linked is not None

    def _warn_unlinked(self, what):
        if not self._warned:
            self._warned = True
            warnings.warn(
                f"{type(self).__name__} is not linked to {what} (a loaded model): it "
                "penalizes each kernel alone. Call deephoyer_tf.regularize(model, ...) "
                "again to couple them.",
                RuntimeWarning,
                stacklevel=3,
            )

    def _linked_matrix(self):
        parts = [
            group_matrix(private_api.current_value(variable), (axis,))
            for variable, axis in self._linked
        ]
        return ops.concatenate(parts, axis=1)


@_register("head_groups")
class HeadGroups(_LinkedGroups):
    """Group-HS (or group lasso) with one group per attention head, across its projections.

    Args:
        strength: float >= 0.
        kind: ``"group_hs"`` (default) or ``"group_lasso"``.
        num_heads: the heads of the attention layer (used by an unlinked
            instance to find the head axis of a kernel).

    Example: two heads whose query, key, value and output slices have norms
    ``(3, 0, 0, 4)`` and ``(0, 0, 0, 0)``: the head norms are 5 and 0, so the
    value is ``strength * 25 / 25 = strength``.
    """

    def __init__(self, strength: float = 1e-4, kind: str = "group_hs", num_heads: int = 1):
        super().__init__(strength, kind)
        self.num_heads = validation.check_int(num_heads, "num_heads", minimum=1)

    @classmethod
    def from_group_regularizer(cls, regularizer, num_heads: int) -> HeadGroups:
        """A `HeadGroups` sharing the strength variable of `regularizer`."""
        return cls(regularizer.strength, _kind_of(regularizer), num_heads)._share_strength(
            regularizer
        )

    def _head_axis(self, x):
        shape = tuple(x.shape)
        if len(shape) >= 3 and shape[1] == self.num_heads:
            return 1  # query, key, value, gate: (d, heads, dim)
        if len(shape) >= 2 and shape[0] == self.num_heads:
            return 0  # output: (heads, dim, d...)
        raise ValueError(
            f"HeadGroups(num_heads={self.num_heads}) cannot find the head axis of a kernel "
            f"of shape {shape}: expected (d, heads, dim) or (heads, dim, d)."
        )

    def measure(self, x):
        if self._linked is not None:
            if _same(x, self._linked[0][0]):
                return _group_measure(self.kind, self._linked_matrix())
            if any(_same(x, variable) for variable, _ in self._linked[1:]):
                return ops.zeros((), "float32")  # counted with the query kernel
        else:
            self._warn_unlinked("the projections of its attention layer")
        return _group_measure(self.kind, group_matrix(x, (self._head_axis(x),)))

    def get_config(self) -> dict[str, Any]:
        return {"strength": self.strength, "kind": self.kind, "num_heads": self.num_heads}


@_register("unit_groups")
class UnitGroups(_LinkedGroups):
    """Group-HS (or group lasso) per unit, across the kernel writing it and those reading it.

    Attached to the writer's kernel (its units along `axis`, default the
    last: a Dense or projection's outputs); the readers' kernels are linked
    with the axis of their inputs.

    Args:
        strength: float >= 0.
        kind: ``"group_hs"`` (default) or ``"group_lasso"``.
        axis: the writer kernel's unit axis.
        readers: names of the reading layers (kept in the config).

    Example: a writer ``[[3, 0]]`` (one input, two units) read by ``[[4], [0]]``:
    unit norms 5 and 0, so the value is ``strength``.
    """

    def __init__(
        self,
        strength: float = 1e-4,
        kind: str = "group_hs",
        axis: int = -1,
        readers: Sequence[str] = (),
    ) -> None:
        super().__init__(strength, kind)
        self.axis = validation.check_int(axis, "axis")
        self.readers = [str(name) for name in readers]

    @classmethod
    def from_group_regularizer(cls, regularizer, readers=(), axis=-1) -> UnitGroups:
        return cls(regularizer.strength, _kind_of(regularizer), axis, readers)._share_strength(
            regularizer
        )

    def measure(self, x):
        parts = [group_matrix(x, (self.axis,))]
        if self._linked is None:
            if self.readers:
                self._warn_unlinked(f"its readers {self.readers}")
        else:
            parts.append(self._linked_matrix())
        return _group_measure(self.kind, ops.concatenate(parts, axis=1))

    def get_config(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "kind": self.kind,
            "axis": self.axis,
            "readers": list(self.readers),
        }


@_register("axis_groups")
class AxisGroups(DeepHoyerRegularizer):
    """Group-HS (or group lasso) over given kernel axes: an `EinsumDense`'s units.

    Args:
        strength: float >= 0 (of the outputs term, and of the inputs term
            unless `input_strength` is given).
        kind: ``"group_hs"`` or ``"group_lasso"``.
        groups: ``"outputs"``, ``"inputs"`` or ``"both"``.
        output_axes, input_axes: the kernel axes indexing output and input
            units (`deephoyer_tf.structure.attention.einsum_axes`).
        input_strength: strength of the inputs term with ``groups="both"``.
    """

    def __init__(
        self,
        strength: float = 1e-4,
        kind: str = "group_hs",
        groups: str = "both",
        output_axes: Sequence[int] = (-1,),
        input_axes: Sequence[int] = (-2,),
        input_strength: float | None = None,
    ) -> None:
        super().__init__(strength)
        self.kind = validation.check_choice(kind, "kind", _KINDS)
        self.groups = validation.check_choice(groups, "groups", ("outputs", "inputs", "both"))
        self.output_axes = tuple(int(a) for a in output_axes)
        self.input_axes = tuple(int(a) for a in input_axes)
        self._input_strength = self._strength
        if input_strength is not None:
            self._input_strength = type(self)(input_strength)._strength

    @classmethod
    def from_group_regularizer(cls, regularizer, axes) -> AxisGroups:
        """For an `EinsumDense` of `axes` (an `EinsumAxes`), sharing `regularizer`'s strengths."""
        made = cls(
            regularizer.strength,
            _kind_of(regularizer),
            regularizer.groups,
            axes.output_axes,
            axes.input_axes,
        )
        variables = regularizer.strength_variables()
        made._strength = variables[0]
        made._input_strength = variables[-1]
        return made

    def _terms(self, x) -> Tuple[Any, ...]:
        terms = []
        if self.groups in ("outputs", "both") and self.output_axes:
            terms.append((self._strength, self.output_axes))
        if self.groups in ("inputs", "both") and self.input_axes:
            terms.append((self._input_strength, self.input_axes))
        return tuple(terms)

    def measure(self, x):
        total = ops.zeros((), "float32")
        for _, axes in self._terms(x):
            total = total + _group_measure(self.kind, group_matrix(x, axes))
        return total

    def __call__(self, x):
        total = ops.zeros((), "float32")
        for strength, axes in self._terms(x):
            total = total + ops.cast(strength, "float32") * _group_measure(
                self.kind, group_matrix(x, axes)
            )
        return total

    def strength_variables(self) -> list:
        if self._input_strength is self._strength:
            return [self._strength]
        return [self._strength, self._input_strength]

    def get_config(self) -> dict[str, Any]:
        tied = self._input_strength is self._strength
        return {
            "strength": self.strength,
            "kind": self.kind,
            "groups": self.groups,
            "output_axes": list(self.output_axes),
            "input_axes": list(self.input_axes),
            "input_strength": None if tied else float(ops.convert_to_numpy(self._input_strength)),
        }
