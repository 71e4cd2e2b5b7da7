"""The sparsity measures of DeepHoyer as pure TensorFlow functions.

Framework-neutral core shared by the Keras 3 and tf_keras faces: every function
takes a tensor and returns float32. Computations run in float32 whatever the
input dtype (a float16 sum of squares overflows past 65,504).

Cost. The penalties run in every training step, so Hoyer, Hoyer-Square and
Group-HS carry their closed-form gradients (`tf.custom_gradient`): eq. 4 of
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

import tensorflow as tf

# Below this, a sum of squares has lost precision to underflow: rescale.
_TINY = 1e-30


def _as_float32(x):
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    return x


def _scaled(w):
    """``(u, s, sum u^2)`` with ``u = w / s``; ``s = 1`` unless ``sum w^2`` is unsafe."""
    l2 = tf.reduce_sum(tf.square(w))

    def keep():
        return w, tf.constant(1.0), l2

    def rescale():
        peak = tf.reduce_max(tf.abs(w))
        s = tf.where(peak > 0.0, peak, 1.0)
        u = w / s
        return u, s, tf.reduce_sum(tf.square(u))

    return tf.cond(tf.math.is_finite(l2) & (l2 > _TINY), keep, rescale)


def _reduce_axes(rank, keep_axes):
    keep = {axis % rank for axis in keep_axes}
    return [axis for axis in range(rank) if axis not in keep]


def _safe_norms(w, keep_axes, keepdims=False, squares=None):
    """L2 norm of each group (groups index the `keep_axes` of `w`); 0, not NaN, at 0.

    `squares`, if given, is ``tf.square(w)`` already computed.
    """
    squares = tf.square(w) if squares is None else squares
    squares = tf.reduce_sum(
        squares, axis=_reduce_axes(w.shape.rank, keep_axes), keepdims=keepdims
    )
    positive = squares > 0.0
    return tf.where(positive, tf.sqrt(tf.where(positive, squares, 1.0)), 0.0)


@tf.custom_gradient
def _hoyer_square(w):
    u, s, l2 = _scaled(w)
    l1 = tf.reduce_sum(tf.abs(u))
    l2 = tf.where(l2 > 0.0, l2, 1.0)  # l2 = 0 only for W = 0, where l1 = 0 too
    ratio = l1 / l2

    def grad(upstream):
        # eq. 4: dH_S/dw_j = 2 sign(w_j) l1 / l2 - 2 (l1 / l2)^2 w_j   (in u, then / s)
        return upstream * ((2.0 * ratio / s) * tf.sign(u) - (2.0 * tf.square(ratio) / s) * u)

    return l1 * ratio, grad


@tf.custom_gradient
def _hoyer(w):
    u, s, l2 = _scaled(w)
    l1 = tf.reduce_sum(tf.abs(u))
    l2 = tf.where(l2 > 0.0, l2, 1.0)
    root = tf.sqrt(l2)

    def grad(upstream):
        # dR/dw_j = sign(w_j) / sqrt(l2) - l1 w_j / l2^(3/2)
        return upstream * ((1.0 / (root * s)) * tf.sign(u) - (l1 / (l2 * root * s)) * u)

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

    @tf.custom_gradient
    def terms(x):
        u, s, l2 = _scaled(x)
        l2 = tf.where(l2 > 0.0, l2, 1.0)
        squares = tf.square(u)
        norms = [_safe_norms(u, keep, True, squares) for keep in keep_axes_list]
        sums = [tf.reduce_sum(n) for n in norms]
        values = tf.stack([tf.square(a) / l2 for a in sums])

        def grad(upstream):
            factor = 0.0
            for k, (n, a) in enumerate(zip(norms, sums)):
                inverse = tf.where(n > 0.0, 1.0 / tf.where(n > 0.0, n, 1.0), 0.0)
                factor += (upstream[k] * 2.0 * a / l2) * inverse
                factor -= upstream[k] * 2.0 * tf.square(a / l2)
            return u * (factor / s)

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
    peak = tf.stop_gradient(tf.reduce_max(tf.abs(w)))
    scale = tf.where(peak > 0.0, peak, 1.0)
    return scale * tf.reduce_sum(_safe_norms(w / scale, keep_axes))


def hoyer_measure(w):
    """Hoyer's sparsity measure ``S(W) = (sqrt(N) - R(W)) / (sqrt(N) - 1)`` (eq. 1).

    1 for a single nonzero element, 0 for all elements equal in magnitude. An
    all-zero tensor gives 1 (by convention, fully sparse); a one-element tensor 0.
    """
    w = _as_float32(w)
    n = tf.cast(tf.size(w), tf.float32)
    root = tf.sqrt(n)
    nonzero = tf.reduce_any(tf.not_equal(w, 0.0))
    ratio = tf.where(nonzero, hoyer(w), 1.0)
    return tf.where(n > 1.0, (root - ratio) / tf.maximum(root - 1.0, 1e-12), 0.0)
