"""The sparsity measures of DeepHoyer as backend-neutral `keras.ops` functions.

The core shared by every Keras backend (TensorFlow, JAX, PyTorch) and by the
tf_keras face (on TensorFlow, `keras.ops` computes with, and returns, TF
tensors): every function takes a tensor and returns float32. Computations run
in float32 whatever the input dtype (a float16 sum of squares overflows past
65,504), and so do the gradients: that of float16 or bfloat16 weights is
returned in their dtype, saturated at its largest finite value, never inf.

Cost. The penalties run in every training step, so Hoyer, Hoyer-Square and
Group-HS carry their closed-form gradients (`keras.ops.custom_gradient`): eq. 4 of
the paper for Hoyer-Square, eq. 10 (appendix) for Group-HS. A gradient is then
two scalars times ``sign(w)`` and ``w`` (or ``w`` over its group norm) instead
of autodiff through every intermediate, and both Group-HS terms (outputs and
inputs groups) share one pass over the kernel.

Numerical safety. The measures are scale invariant, so when ``sum w^2``
overflows or underflows float32 (kernels beyond about 1e19 or below 1e-19 in
magnitude) they are evaluated on ``u = w / max|w|`` instead, which leaves value
and gradient unchanged (``grad f(w) = grad f(u) / max|w|`` for a function
homogeneous of degree 0). An all-zero tensor gives 0 with a zero gradient.
"""


import keras
from keras import ops

from deephoyer_tf._internal import backend

# Below this, a sum of squares has lost precision to underflow: rescale.
_TINY = 1e-30


# The largest finite float16 and bfloat16 values.
_FINITE_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38}


def _as_float32(x):
    x = backend.to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    if dtype in _FINITE_MAX:
        return _upcast_saturating(x, dtype)
    if dtype != "float32":
        x = ops.cast(x, "float32")
    return x


def _upcast_saturating(x, dtype):
    """`x` as float32; its gradient goes back to `dtype` saturated at the dtype's largest value.

    The measures' gradients grow as ``1 / max|w|``: with float16 weights near
    1e-6 and strength 1, Hoyer-Square's is about 2e6, past float16's 65,504,
    and a plain cast back would give inf (then NaN in the weights). Computed
    in float32, it is clipped to the largest finite value of the weights'
    dtype instead: the sign is kept, and the optimizer sees a finite step.
    """
    bound = _FINITE_MAX[dtype]

    @ops.custom_gradient
    def upcast(v):
        def grad(*args, upstream=None):
            upstream = _grad_upstream(args, upstream)
            return ops.cast(ops.clip(ops.cast(upstream, "float32"), -bound, bound), dtype)

        return ops.cast(v, "float32"), grad

    return upcast(x)


def _rank(x):
    return len(x.shape)


def _grad_upstream(args, upstream):
    """The upstream gradient, passed positionally (TF, JAX) or by keyword (PyTorch)."""
    return args[-1] if upstream is None else upstream


def _scaled(w):
    """``(u, s, sum u^2)`` with ``u = w / s``; ``s = 1`` unless ``sum w^2`` is unsafe."""
    l2 = ops.sum(ops.square(w))

    def keep():
        return w, ops.ones((), "float32"), l2

    def rescale():
        peak = ops.max(ops.abs(w))
        s = ops.where(peak > 0.0, peak, 1.0)
        u = w / s
        return u, s, ops.sum(ops.square(u))

    return ops.cond(ops.logical_and(ops.isfinite(l2), l2 > _TINY), keep, rescale)


def _reduce_axes(rank, keep_axes):
    keep = {axis % rank for axis in keep_axes}
    return tuple(axis for axis in range(rank) if axis not in keep)


def _safe_norms(w, keep_axes, keepdims=False, squares=None):
    """L2 norm of each group (groups index the `keep_axes` of `w`); 0, not NaN, at 0.

    `squares`, if given, is ``ops.square(w)`` already computed.
    """
    squares = ops.square(w) if squares is None else squares
    squares = ops.sum(squares, axis=_reduce_axes(_rank(w), keep_axes), keepdims=keepdims)
    positive = squares > 0.0
    return ops.where(positive, ops.sqrt(ops.where(positive, squares, 1.0)), 0.0)


@ops.custom_gradient
def _hoyer_square(w):
    u, s, l2 = _scaled(w)
    l1 = ops.sum(ops.abs(u))
    l2 = ops.where(l2 > 0.0, l2, 1.0)  # l2 = 0 only for W = 0, where l1 = 0 too
    ratio = l1 / l2

    def grad(*args, upstream=None):
        upstream = _grad_upstream(args, upstream)
        # eq. 4: dH_S/dw_j = 2 sign(w_j) l1 / l2 - 2 (l1 / l2)^2 w_j   (in u, then / s)
        # Divided by s last: for a tiny s, the two terms alone could be inf - inf = NaN.
        return upstream * (((2.0 * ratio) * ops.sign(u) - (2.0 * ops.square(ratio)) * u) / s)

    return l1 * ratio, grad


@ops.custom_gradient
def _hoyer(w):
    u, s, l2 = _scaled(w)
    l1 = ops.sum(ops.abs(u))
    l2 = ops.where(l2 > 0.0, l2, 1.0)
    root = ops.sqrt(l2)

    def grad(*args, upstream=None):
        upstream = _grad_upstream(args, upstream)
        # dR/dw_j = sign(w_j) / sqrt(l2) - l1 w_j / l2^(3/2)
        return upstream * (((1.0 / root) * ops.sign(u) - (l1 / (l2 * root)) * u) / s)

    return l1 / root, grad


def hoyer(w):
    """Hoyer regularizer ``R(W) = sum|w_i| / sqrt(sum w_i^2)`` (eq. 2); 0 for W = 0."""
    return _hoyer(_as_float32(w))


def hoyer_square(w):
    """Hoyer-Square ``H_S(W) = (sum|w_i|)^2 / sum w_i^2`` (eq. 3); 0 for W = 0."""
    return _hoyer_square(_as_float32(w))


def group_hoyer_square_terms(w, keep_axes_list):
    """Group-HS of `w` for several groupings at once, as a float32 vector.

    Term k is ``G_H = (sum_g ||w^(g)||_2)^2 / ||W||_2^2`` (eq. 6) with the
    groups indexed by ``keep_axes_list[k]`` (the groups partition W, so the
    denominator is the same for every grouping). Gradient (eq. 10):
    ``dG_H/dw_j = 2 A / S * w_j / ||w^(g(j))|| - 2 A^2 / S^2 * w_j`` with
    ``A = sum_g ||w^(g)||`` and ``S = ||W||^2``.
    """
    keep_axes_list = [tuple(k) for k in keep_axes_list]

    @ops.custom_gradient
    def terms(x):
        u, s, l2 = _scaled(x)
        l2 = ops.where(l2 > 0.0, l2, 1.0)
        squares = ops.square(u)
        norms = [_safe_norms(u, keep, True, squares) for keep in keep_axes_list]
        sums = [ops.sum(n) for n in norms]
        values = ops.stack([ops.square(a) / l2 for a in sums])

        def grad(*args, upstream=None):
            upstream = _grad_upstream(args, upstream)
            factor = 0.0
            for k, (n, a) in enumerate(zip(norms, sums)):
                inverse = ops.where(n > 0.0, 1.0 / ops.where(n > 0.0, n, 1.0), 0.0)
                # Not `+=`: in place on a PyTorch tensor, it cannot broadcast.
                factor = factor + (upstream[k] * 2.0 * a / l2) * inverse
                factor = factor - upstream[k] * 2.0 * ops.square(a / l2)
            return (u * factor) / s

        return values, grad

    return terms(_as_float32(w))


def group_hoyer_square(w, keep_axes):
    """Group-HS ``G_H(W) = (sum_g ||w^(g)||_2)^2 / sum_g ||w^(g)||_2^2`` (eq. 6)."""
    return group_hoyer_square_terms(w, [keep_axes])[0]


def group_lasso(w, keep_axes):
    """Group lasso ``R_G(W) = sum_g ||w^(g)||_2`` (eq. 5).

    Not scale invariant: evaluated as ``max|w| * R_G(w / max|w|)`` to stay clear
    of overflow in the squares.
    """
    w = _as_float32(w)
    peak = ops.stop_gradient(ops.max(ops.abs(w)))
    scale = ops.where(peak > 0.0, peak, 1.0)
    return scale * ops.sum(_safe_norms(w / scale, keep_axes))


def hoyer_measure(w):
    """Hoyer's sparsity measure ``S(W) = (sqrt(N) - R(W)) / (sqrt(N) - 1)`` (eq. 1).

    1 for a single nonzero element, 0 for all elements equal in magnitude. An
    all-zero tensor gives 1 (by convention, fully sparse); a one-element tensor 0.
    """
    w = _as_float32(w)
    n = ops.cast(ops.size(w), "float32")
    root = ops.sqrt(n)
    nonzero = ops.any(ops.not_equal(w, 0.0))
    ratio = ops.where(nonzero, hoyer(w), 1.0)
    return ops.where(n > 1.0, (root - ratio) / ops.maximum(root - 1.0, 1e-12), 0.0)
