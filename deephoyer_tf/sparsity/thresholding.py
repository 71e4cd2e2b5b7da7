"""`prune`: set every kernel weight below a threshold to exactly zero.

The second stage of DeepHoyer (paper, section 4.3): after training with the
regularizer, weights with ``|w| < t`` are removed. Two rules for ``t``:

* ``std_ratio``: ``t = std_ratio * std(W)`` with ``std`` the (population)
  standard deviation of the layer's kernel ``W``, the paper's MNIST rule;
* ``threshold``: an absolute ``t``, its ImageNet rule.
"""

from __future__ import annotations

import collections.abc
import warnings
from typing import TYPE_CHECKING

import numpy as np

from deephoyer_tf._internal import flavours
from deephoyer_tf._internal import validation
from deephoyer_tf.sparsity import kernels as kernels_lib
from deephoyer_tf.sparsity import zero_mask
from deephoyer_tf.structure import registry
from deephoyer_tf.structure.report import sparsity_report

if TYPE_CHECKING:
    from typing import Any
    from typing import Mapping
    from typing import Sequence

    from deephoyer_tf.structure.report import SparsityReport

    ModelLike = Any  # a Keras 3 or tf_keras model


def _check_value(value, name, label):
    return validation.check_float(
        value, name, label=label, type_hint="a float or a dict from layer name to float"
    )


def check_rule(std_ratio, threshold):
    """Validates the pair; returns ``(name, value)`` with value a float or dict.

    Exactly one of `std_ratio` and `threshold` must be given; each is a float
    >= 0 or a dict from layer name to such a float.
    """
    if (std_ratio is None) == (threshold is None):
        raise ValueError(
            "Exactly one of the arguments `std_ratio` and `threshold` must be "
            f"given. Received: std_ratio={std_ratio!r}, threshold={threshold!r}"
        )
    name, value = (
        ("std_ratio", std_ratio) if std_ratio is not None else ("threshold", threshold)
    )
    if isinstance(value, collections.abc.Mapping):
        checked = {}
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError(
                    f"Invalid type for argument `{name}`. Expected layer names "
                    f"(str) as dict keys. Received: key {key!r} of type "
                    f"{type(key).__name__}"
                )
            checked[key] = _check_value(item, name, f"{name}[{key!r}]")
        return name, checked
    return name, _check_value(value, name, name)


def prune(
    model: ModelLike,
    std_ratio: float | Mapping[str, float] | None = None,
    threshold: float | Mapping[str, float] | None = None,
    *,
    biases: bool = False,
    layer_types: Sequence[str] | str | None = None,
) -> SparsityReport:
    """Sets every kernel weight with ``|w| < t`` to exactly 0, in place.

    For each kernel ``W`` of the selected layers, the threshold is
    ``t = std_ratio * np.std(W)`` (paper, section 4.3, MNIST; computed and
    compared in float64 whatever the kernel's dtype) or
    ``t = threshold`` (ImageNet); then ``W[|W| < t] = 0``. Pass exactly one of
    the two. A dict gives per-layer values; layers it does not name are left
    untouched. On a model whose zeros are held by `fix_zeros` (either flavour)
    the masks are updated too, so the new zeros are held as well.

    Args:
        model: a built Keras model, Keras 3 or tf_keras, possibly wrapped by
            `fix_zeros` (TFMOT wrappers are seen through).
        std_ratio: float >= 0, or dict {layer name: float}: the threshold in
            units of the kernel's standard deviation.
        threshold: float >= 0, or dict {layer name: float}: the absolute
            threshold.
        biases: also prune the biases of the same layers, with
            ``t = std_ratio * np.std(b)`` or ``t = threshold`` (default False).
            `fix_zeros` holds kernel zeros only.
        layer_types: layer types to prune, default
            `deephoyer_tf.structure.registry.default_types()` (``Dense``,
            ``Conv1D/2D/3D`` and custom layers registered with the default).

    Returns:
        ``deephoyer_tf.sparsity_report(model)`` after pruning.

    Raises:
        TypeError: `model` is not a Keras model; a value is not a float.
        ValueError: both or neither of `std_ratio` and `threshold`; a negative
            or non-finite value; a dict naming layers without a prunable kernel,
            or naming both a TFMOT wrapper and its layer; an unsupported layer
            type; a layer not built; a kernel (or pruned bias) holding NaN or
            inf (training diverged); a model `sparsity_report` refuses (a
            channels-first layer). All of these before any weight changes:
            when `prune` raises, the model is unchanged.

    Example: a Dense kernel ``[[0.1, -2.0], [0.5, 3.0]]`` with
    ``threshold=0.6`` becomes ``[[0, -2.0], [0, 3.0]]``::

        deephoyer_tf.prune(model, threshold=0.6)
        report = deephoyer_tf.prune(model, std_ratio={"fc1": 0.5, "fc2": 0.25})
        print(report)
    """
    plan = _plan(model, std_ratio, threshold, biases, layer_types)
    # Everything is checked and every new weight computed: only now is the model changed.
    originals = [(variable, variable.numpy()) for _, changes in plan for variable, _ in changes]
    refreshed = False
    try:
        for ref, changes in plan:
            for variable, new in changes:
                variable.assign(new)
            refreshed = zero_mask.refresh_masks(ref) or refreshed
    except BaseException:
        for variable, old in originals:  # never leave the model half-pruned
            variable.assign(old)
        raise
    zero_mask.retrace_after_refresh(model, refreshed)
    return sparsity_report(model)


def check_prunable(model, std_ratio=None, threshold=None, *, biases=False, layer_types=None):
    """Raises what `prune` would raise on `model`, without changing it (`ThresholdPruning`'s early check)."""
    _plan(model, std_ratio, threshold, biases, layer_types)


def _plan(model, std_ratio, threshold, biases, layer_types):
    """Validates `prune`'s arguments; returns [(ref, [(variable, new value)])], the model untouched.

    Also runs `sparsity_report` on the model as it is, so that what the
    report refuses (a channels-first layer, say) is refused before pruning.
    """
    flavours.check_model(model)
    rule, value = check_rule(std_ratio, threshold)
    validation.check_bool(biases, "biases")
    types = registry.check_layer_types(layer_types)
    refs = kernels_lib.model_kernels(model, types)
    for ref in refs:
        _check_finite(ref.layer, ref.variable, "kernel")
        bias = getattr(ref.layer, "bias", None) if biases else None
        if bias is not None:
            _check_finite(ref.layer, bias, "bias")
    if isinstance(value, dict):
        kernels_lib.check_layer_dict(value, refs, types, rule)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report after pruning warns
        sparsity_report(model)
    plan = []
    pruned_layers = set()
    for ref in refs:
        if isinstance(value, dict):
            names = sorted(ref.names() & set(value))
            if not names:
                continue
            if len(names) > 1:
                raise ValueError(
                    f"Invalid value for argument `{rule}`: it names both the TFMOT "
                    f"wrapper {ref.wrapper.name!r} and the layer {ref.layer.name!r} it "
                    f"wraps, with values {[value[n] for n in names]}. Name one of them."
                )
            layer_value = value[names[0]]
        else:
            layer_value = value
        changes = [(ref.variable, _pruned(ref.variable, rule, layer_value))]
        if biases and id(ref.layer) not in pruned_layers:
            bias = getattr(ref.layer, "bias", None)
            if bias is not None:
                changes.append((bias, _pruned(bias, rule, layer_value)))
        pruned_layers.add(id(ref.layer))
        plan.append((ref, changes))
    return plan


def standard_deviation(weights):
    """The population standard deviation of `weights`, computed in float64.

    In a kernel's own dtype the squares overflow (float32 ``|w| > 1.8e19``,
    float16 ``|w| > 256``) or underflow (``|w| < 1e-23`` in float32): the
    threshold would be inf or 0, removing every weight or none. float64
    holds the squares of every float32, float16 and bfloat16 value; a
    float64 kernel is scaled by its largest magnitude first.
    """
    w = np.asarray(weights).astype(np.float64)
    if w.size == 0:
        return 0.0
    if np.asarray(weights).dtype.itemsize < 8:
        return float(np.std(w))
    scale = float(np.max(np.abs(w)))
    return 0.0 if scale == 0.0 else scale * float(np.std(w / scale))


def _pruned(variable, rule, value):
    """The new value of `variable`: its weights with ``|w| < t`` set to 0, in its dtype."""
    weights = np.asarray(variable.numpy())
    t = value * standard_deviation(weights) if rule == "std_ratio" else value
    # Compared in float64: `t` cast to float16 would round (and overflow past 65504).
    small = np.abs(weights.astype(np.float64)) < t
    return np.where(small, np.zeros_like(weights), weights)


def _check_finite(layer, variable, what):
    weights = np.asarray(variable.numpy())
    bad = ~np.isfinite(weights)
    if bad.any():
        raise ValueError(
            f"prune() cannot threshold layer {layer.name!r}: its {what} of shape "
            f"{weights.shape} holds {int(np.isnan(weights).sum())} NaN and "
            f"{int(np.isinf(weights).sum())} inf values (training diverged?). "
            "Lower the learning rate or the regularization strength, or restore "
            "an earlier checkpoint."
        )
