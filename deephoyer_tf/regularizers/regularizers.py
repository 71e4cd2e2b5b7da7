"""DeepHoyer regularizers as Keras regularizers.

Attach them the way Keras users attach `keras.regularizers.L1`::

    layer = keras.layers.Dense(300, kernel_regularizer=deephoyer_tf.HoyerSquare(1e-4))

The same instance works on Keras 3 layers and on tf_keras layers, and models
using it save and load in both flavours without `custom_objects`.

Each regularizer returns ``strength * measure(W)`` as a float32 scalar,
computed with `keras.ops` on every Keras backend (TensorFlow, JAX, PyTorch).
The strength is held in a variable (a `tf.Variable` on TensorFlow, a
`keras.Variable` on the other backends), so it can be changed during training
without recompiling: ``regularizer.strength = 0.0`` switches it off. (On JAX
the compiled step sees the new value once the variable is part of the model's
state: `deephoyer_tf.strength_variables(model)`, `StrengthSchedule` and
`ThresholdPruning` see to it.)

Reference: Yang, Wen, Li. "DeepHoyer: Learning Sparser Neural Network with
Differentiable Scale-Invariant Sparsity Measures." ICLR 2020.
"""

from __future__ import annotations

import warnings
from typing import TYPE_CHECKING

import keras
from keras import ops

from deephoyer_tf._internal import backend
from deephoyer_tf._internal import tf_keras_faces
from deephoyer_tf._internal import validation
from deephoyer_tf.regularizers import measures as _measures
from deephoyer_tf.structure import patterns
from deephoyer_tf.structure import registry

if TYPE_CHECKING:
    from typing import Any
    from typing import TypeVar

    # A kernel: a tensor, a variable (either Keras flavour) or an array.
    TensorLike = Any
    Tensor = Any  # a float32 tensor of the backend (tf.Tensor, jax.Array, torch.Tensor)
    Variable = Any  # tf.Variable on TensorFlow, keras.Variable on the other backends
    _G = TypeVar("_G", bound="_GroupRegularizer")

_PACKAGE = "deephoyer_tf"
_GROUPS = ("outputs", "inputs", "both", "blocks")

# Classes registered here are also registered with tf_keras when it is imported.
REGISTERED = []


def _register(alias):
    """Registers a class with Keras 3 (and tf_keras) as ``deephoyer_tf>Name``.

    `alias`, the snake_case name, is registered as a custom object too, so
    ``{"class_name": "hoyer_square", "config": {"strength": 1e-4}}``
    deserializes in both flavours. (A bare string such as
    ``kernel_regularizer="hoyer_square"`` is not supported: Keras 3 looks
    strings up among its built-ins only.)
    """

    def decorator(cls):
        keras.saving.register_keras_serializable(package=_PACKAGE)(cls)
        keras.saving.get_custom_objects()[alias] = cls
        cls.alias = alias
        REGISTERED.append(cls)
        return cls

    return decorator


def _register_with_tf_keras(tf_keras):
    """The tf_keras face: registration, and tf_keras' `Regularizer` as a second base.

    Registers the classes with tf_keras under ``deephoyer_tf>Name``, alias and
    name. tf_keras' `regularizers.serialize` warns about regularizers that are
    not `tf_keras.regularizers.Regularizer` instances, so that class becomes a
    second base of `DeepHoyerRegularizer` once tf_keras is imported (until
    then it cannot be named without importing tf_keras).
    """
    base = tf_keras.regularizers.Regularizer
    if base not in DeepHoyerRegularizer.__mro__:
        DeepHoyerRegularizer.__bases__ = DeepHoyerRegularizer.__bases__ + (base,)
    custom_objects = tf_keras.utils.get_custom_objects()
    for cls in REGISTERED:
        tf_keras.utils.register_keras_serializable(package=_PACKAGE)(cls)
        custom_objects.setdefault(cls.alias, cls)
        # tf_keras's legacy (.h5) loader looks nested objects up by their bare
        # `class_name`, not by the registered ``deephoyer_tf>Name``.
        custom_objects.setdefault(cls.__name__, cls)


def _rank(x):
    try:
        return len(x.shape)
    except ValueError:  # a TensorFlow tensor of unknown rank
        return None


def _scale(strength, value):
    """``strength * value``, the strength variable read as a float32 tensor."""
    return ops.multiply(ops.convert_to_tensor(strength), value)


def _check_strength(value, name):
    return validation.check_float(value, name)


def _new_strength_variable(value, name):
    """A float32 scalar variable: `tf.Variable` on TensorFlow, else `keras.Variable`."""
    if backend.is_tensorflow():
        import tensorflow as tf

        with tf.init_scope():
            return tf.Variable(value, trainable=False, dtype=tf.float32, name=name)
    return keras.Variable(value, dtype="float32", trainable=False, name=name)


def _read_float(variable):
    return float(variable.numpy())


class _StrengthVariable:
    """A descriptor exposing a strength variable as a float attribute."""

    def __init__(self, slot):
        self.slot = slot

    def __set_name__(self, owner, name):
        self.name = name

    def __get__(self, instance, owner=None):
        if instance is None:
            return self
        return _read_float(getattr(instance, self.slot))

    def __set__(self, instance, value):
        getattr(instance, self.slot).assign(_check_strength(value, self.name))
        instance._warn_if_frozen(self.name)


class DeepHoyerRegularizer(keras.regularizers.Regularizer):
    """Base class: a strength held in a variable times a sparsity measure.

    An instance is a `keras.regularizers.Regularizer` that tf_keras layers
    accept too (tf_keras takes any callable with `get_config`): one object
    for both Keras flavours, registered with both (with tf_keras when it is
    imported), so models of either flavour save and load without
    `custom_objects`.

    Subclasses implement `measure(x)`. `strength_variables()` lists the
    variables a callback may assign to warm up, anneal or switch off the
    penalty.
    """

    strength = _StrengthVariable("_strength")

    def __init__(self, strength: float) -> None:
        strength = _check_strength(strength, "strength")
        self._strength = _new_strength_variable(strength, "strength")

    def measure(self, x: TensorLike) -> Tensor:
        """The unscaled sparsity measure of `x`, a float32 scalar."""
        raise NotImplementedError

    def __call__(self, x: TensorLike) -> Tensor:
        return self._note_trace(_scale(self._strength, self.measure(x)))

    # On JAX, a strength outside the model's state is a constant of the
    # compiled step that read it: remember such a read, to warn when the
    # strength is set afterwards (`track_strengths` sets `_tracked`).
    _frozen = False
    _tracked = False

    def _note_trace(self, value):
        if not self._tracked and backend.is_traced(value):
            self._frozen = True
        return value

    def _warn_if_frozen(self, name):
        if self._frozen and not self._tracked:
            warnings.warn(
                f"{type(self).__name__}.{name} was set on the JAX backend after a train "
                "step was compiled with this regularizer's strength outside the model's "
                "state: that step keeps the old value. Call "
                "deephoyer_tf.strength_variables(model) once (it makes the strengths "
                "part of the model's state; StrengthSchedule and ThresholdPruning do it), "
                "then set the strength.",
                RuntimeWarning,
                stacklevel=3,
            )

    def strength_variables(self) -> list[Variable]:
        """The variables holding the strengths of this regularizer."""
        return [self._strength]

    def get_config(self) -> dict[str, Any]:
        return {"strength": self.strength}

    def __repr__(self) -> str:
        items = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({items})"


@_register("hoyer")
class Hoyer(DeepHoyerRegularizer):
    """Hoyer regularizer: ``strength * sum|w_i| / sqrt(sum w_i^2)`` (paper, eq. 2).

    Scale invariant, range ``[1, sqrt(N)]`` for N elements (0 for an all-zero
    kernel).

    Args:
        strength: float >= 0, the regularization strength (default 1e-4).

    Example: for ``w = [3, 4]``, ``Hoyer(1.0)(w) = 7 / 5 = 1.4``.
    """

    def __init__(self, strength: float = 1e-4) -> None:
        super().__init__(strength)

    def measure(self, x: TensorLike) -> Tensor:
        return _measures.hoyer(x)


@_register("hoyer_square")
class HoyerSquare(DeepHoyerRegularizer):
    """Hoyer-Square: ``strength * (sum|w_i|)^2 / sum w_i^2`` (paper, eq. 3).

    A scale-invariant, differentiable stand-in for the L0 norm: its range is
    ``[1, N]`` for N elements (0 for an all-zero kernel), and its gradient
    (eq. 4) is ``2 sign(w_j) sum|w_i| / (sum w_i^2)^2 * (sum w_i^2 - |w_j| sum|w_i|)``,
    0 at ``w_j = 0``.

    Args:
        strength: float >= 0, the regularization strength (default 1e-4).

    Example: for ``w = [3, 4]``, ``HoyerSquare(1.0)(w) = 49 / 25 = 1.96``.
    """

    def __init__(self, strength: float = 1e-4) -> None:
        super().__init__(strength)

    def measure(self, x: TensorLike) -> Tensor:
        return _measures.hoyer_square(x)


def _blocked(x, layout, block):
    """Kernel `x` as ``(P, out/r, r, in/c, c)`` blocks (zero-padded): groups index axes 0, 1, 3."""
    if layout not in patterns.PATTERN_LAYOUTS:
        raise ValueError(
            f"groups='blocks' needs a kernel with one input and one output axis (layouts "
            f"{patterns.PATTERN_LAYOUTS}). Received: a kernel of shape {tuple(x.shape)} "
            f"with layout={layout!r}"
        )
    if layout == "in_out":
        x = ops.swapaxes(x, -1, -2)
    outputs, inputs = int(x.shape[-2]), int(x.shape[-1])
    x = ops.reshape(x, (-1, outputs, inputs))
    r, c = block
    pad_r, pad_c = (-outputs) % r, (-inputs) % c
    if pad_r or pad_c:
        x = ops.pad(x, ((0, 0), (0, pad_r), (0, pad_c)))
    return ops.reshape(x, (-1, (outputs + pad_r) // r, r, (inputs + pad_c) // c, c))


class _GroupRegularizer(DeepHoyerRegularizer):
    """Shared argument handling of the group regularizers."""

    def __init__(
        self,
        strength: float,
        groups: str = "both",
        input_strength: float | None = None,
        layout: str = "in_out",
        block_size: tuple[int, int] | None = None,
        conv_groups: int = 1,
    ) -> None:
        super().__init__(strength)
        validation.check_choice(groups, "groups", _GROUPS)
        conv_groups = validation.check_int(conv_groups, "conv_groups", minimum=1)
        if conv_groups > 1 and (layout != "in_out" or groups == "blocks"):
            raise ValueError(
                "Argument `conv_groups` (a grouped convolution's `groups`) applies only to "
                "layout='in_out' kernels with groups 'outputs', 'inputs' or 'both'. "
                f"Received: conv_groups={conv_groups}, layout={layout!r}, groups={groups!r}"
            )
        self.conv_groups = conv_groups
        validation.check_choice(layout, "layout", registry.LAYOUTS)
        if input_strength is not None and groups != "both":
            raise ValueError(
                "Argument `input_strength` applies only with groups='both'. "
                f"Received: input_strength={input_strength!r}, groups={groups!r}"
            )
        if groups == "blocks":
            block_size = patterns.check_block_size((1, 4) if block_size is None else block_size)
        elif block_size is not None:
            raise ValueError(
                "Argument `block_size` applies only with groups='blocks'. "
                f"Received: block_size={block_size!r}, groups={groups!r}"
            )
        self.groups = groups
        self.layout = layout
        self.block_size = block_size
        self._tied = input_strength is None
        if self._tied:
            self._input_strength = self._strength
        else:
            self._input_strength = _new_strength_variable(
                _check_strength(input_strength, "input_strength"), "input_strength"
            )

    @property
    def input_strength(self) -> float:
        """Strength of the inputs term (equal to `strength` when tied)."""
        return _read_float(self._input_strength)

    @input_strength.setter
    def input_strength(self, value: float) -> None:
        if self._tied:
            raise ValueError(
                "`input_strength` is tied to `strength` (the regularizer was "
                "created with input_strength=None): set `strength`, which "
                "scales both terms, or create the regularizer with an explicit "
                f"input_strength. Received: input_strength={value!r}"
            )
        self._input_strength.assign(_check_strength(value, "input_strength"))
        self._warn_if_frozen("input_strength")

    def _group_measures(self, x, keep_axes_list):
        """The measure of `x` for each grouping in `keep_axes_list`, as a list."""
        raise NotImplementedError

    def _terms(self, x):
        x = backend.to_tensor(x)
        rank = _rank(x)
        needed = 3 if self.layout == "depthwise" else 2
        if rank is None or rank < needed:
            raise ValueError(
                f"{type(self).__name__} cannot group a tensor of rank {rank} "
                f"(shape {tuple(x.shape)}): groups={self.groups!r} with "
                f"layout={self.layout!r} needs a kernel of rank >= {needed}, "
                "such as a Dense (in, out) or Conv (k..., in, out) kernel."
            )
        if self.groups == "blocks":
            return {"blocks": self._group_measures(_blocked(x, self.layout, self.block_size), [(0, 1, 3)])[0]}
        kinds = ("outputs", "inputs") if self.groups == "both" else (self.groups,)
        if self.conv_groups > 1:
            x, axes = self._grouped(x), {"outputs": (-2, -1), "inputs": (-3, -2)}
            return dict(zip(kinds, self._group_measures(x, [axes[k] for k in kinds])))
        values = self._group_measures(x, [registry.keep_axes(self.layout, k) for k in kinds])
        return dict(zip(kinds, values))

    def _grouped(self, x):
        """A grouped convolution's kernel ``(k..., in/G, out)`` as ``(k..., in/G, G, out/G)``.

        Input unit ``g * in/G + i`` is then the slice ``[..., i, g, :]`` (it
        reaches group g's outputs only) and output unit ``g * out/G + j`` the
        slice ``[..., g, j]``.
        """
        shape = tuple(x.shape)
        if shape[-1] is None or shape[-1] % self.conv_groups:
            raise ValueError(
                f"{type(self).__name__} with conv_groups={self.conv_groups} needs a kernel "
                f"whose last axis (outputs) is a multiple of {self.conv_groups}. Received: "
                f"a kernel of shape {shape}"
            )
        return ops.reshape(x, shape[:-1] + (self.conv_groups, shape[-1] // self.conv_groups))

    def measure(self, x: TensorLike) -> Tensor:
        """Sum of the group measures over the selected group kinds (unscaled)."""
        values = list(self._terms(x).values())
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def __call__(self, x: TensorLike) -> Tensor:
        terms = self._terms(x)
        total = None
        if "blocks" in terms:
            total = _scale(self._strength, terms["blocks"])
        if "outputs" in terms:
            total = _scale(self._strength, terms["outputs"])
        if "inputs" in terms:
            strength = self._strength if self.groups != "both" else self._input_strength
            term = _scale(strength, terms["inputs"])
            total = term if total is None else total + term
        return self._note_trace(total)

    def strength_variables(self) -> list[Variable]:
        if self._tied:
            return [self._strength]
        return [self._strength, self._input_strength]

    def with_layout(self: _G, layout: str) -> _G:
        """A copy for kernels of another `layout`, sharing the strength variables."""
        if layout == self.layout:
            return self
        return self._sharing_copy(layout=layout)

    def with_conv_groups(self: _G, conv_groups: int) -> _G:
        """A copy for a grouped convolution of `conv_groups` groups, sharing the strengths.

        Its groups follow the convolution's groups: input unit ``g * in/G + i``
        is the kernel slice ``[..., i, g * out/G : (g + 1) * out/G]``, the
        weights that unit reaches its outputs with (not ``[..., i, :]``, which
        spans G input units).
        """
        if conv_groups == self.conv_groups:
            return self
        return self._sharing_copy(conv_groups=conv_groups)

    def _sharing_copy(self, **changes):
        clone = type(self).from_config({**self.get_config(), **changes})
        clone._strength = self._strength
        clone._input_strength = self._input_strength
        return clone

    def get_config(self) -> dict[str, Any]:
        return {
            "strength": self.strength,
            "groups": self.groups,
            "input_strength": None if self._tied else self.input_strength,
            "layout": self.layout,
            "block_size": self.block_size,
            "conv_groups": self.conv_groups,
        }


@_register("group_hoyer_square")
class GroupHoyerSquare(_GroupRegularizer):
    """Group-HS: ``strength * (sum_g ||w^(g)||_2)^2 / sum_g ||w^(g)||_2^2`` (eq. 6).

    Groups are the units of the layer, so that a zero group is a removable
    neuron, filter or channel:

    * ``groups="outputs"``: one group per output unit (a Dense output neuron,
      a Conv filter): for a Keras ``(k..., in, out)`` kernel, reduce over every
      axis but the last.
    * ``groups="inputs"``: one group per input unit (a Dense input feature, a
      Conv input channel): reduce over every axis but the second-to-last.
    * ``groups="both"`` (default): the sum of the two terms, eq. 8 of the paper;
      by default with equal strengths, or ``input_strength`` for the inputs
      term.
    * ``groups="blocks"``: one group per ``block_size=(r, c)`` block of r
      outputs by c consecutive inputs (default ``(1, 4)``; TFLite's
      ``(outputs, inputs)`` orientation, see `deephoyer_tf.structure.patterns`),
      so that whole blocks die: the pattern of `MagnitudePruning(...,
      block_size=...)` and of TFLite's sparse kernels. Kernels of layouts
      ``"in_out"`` and ``"out_in"`` only.

    Args:
        strength: float >= 0 (default 1e-4), the strength of the outputs term
            (and of the inputs term unless `input_strength` is given).
        groups: ``"outputs"``, ``"inputs"`` or ``"both"``.
        input_strength: float >= 0 or None, the strength of the inputs term
            when ``groups="both"``.
        block_size: ``(r, c)`` with ``groups="blocks"`` (default ``(1, 4)``);
            None otherwise.
        layout: the kernel layout: ``"in_out"`` (Dense, Conv, Embedding: the
            default), ``"out_in"`` (ConvTranspose) or ``"depthwise"``
            (DepthwiseConv, the depthwise kernel of SeparableConv, whose output
            channels are (input channel, multiplier) pairs).
            `deephoyer_tf.regularize` picks it from the layer type.
        conv_groups: the ``groups`` of a grouped convolution (default 1): its
            kernel ``(k..., in/G, out)`` links input unit ``g * in/G + i`` to
            group g's outputs only, so that unit's group is
            ``W[..., i, g*out/G : (g+1)*out/G]``. `deephoyer_tf.regularize`
            sets it from the layer.

    Example: for ``W = [[3, 0], [4, 0]]`` (a Dense kernel, 2 inputs, 2 outputs)
    the output groups have norms 5 and 0, so ``GroupHoyerSquare(1.0,
    "outputs")(W) = 25 / 25 = 1``; the input groups have norms 3 and 4, so
    ``GroupHoyerSquare(1.0, "inputs")(W) = 49 / 25 = 1.96``.
    """

    def __init__(
        self,
        strength: float = 1e-4,
        groups: str = "both",
        input_strength: float | None = None,
        layout: str = "in_out",
        block_size: tuple[int, int] | None = None,
        conv_groups: int = 1,
    ) -> None:
        super().__init__(strength, groups, input_strength, layout, block_size, conv_groups)

    def _group_measures(self, x, keep_axes_list):
        # Both groupings in one pass, with the closed-form gradient (eq. 10).
        terms = _measures.group_hoyer_square_terms(x, keep_axes_list)
        return [terms[k] for k in range(len(keep_axes_list))]


@_register("group_lasso")
class GroupLasso(_GroupRegularizer):
    """Group lasso: ``strength * sum_g ||w^(g)||_2`` (paper eq. 5; Wen et al. 2016).

    The baseline structural regularizer. Same groups, arguments and layouts as
    `GroupHoyerSquare`. Not scale invariant.

    Example: for ``W = [[3, 0], [4, 0]]``, ``GroupLasso(1.0, "outputs")(W) = 5``
    and ``GroupLasso(1.0, "inputs")(W) = 3 + 4 = 7``.
    """

    def __init__(
        self,
        strength: float = 1e-4,
        groups: str = "both",
        input_strength: float | None = None,
        layout: str = "in_out",
        block_size: tuple[int, int] | None = None,
        conv_groups: int = 1,
    ) -> None:
        super().__init__(strength, groups, input_strength, layout, block_size, conv_groups)

    def _group_measures(self, x, keep_axes_list):
        return [_measures.group_lasso(x, keep) for keep in keep_axes_list]


tf_keras_faces.on_tf_keras(_register_with_tf_keras)
