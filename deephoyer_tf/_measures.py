"""The sparsity measures of DeepHoyer as pure TensorFlow functions.

Framework-neutral core shared by the Keras 3 and tf_keras faces: every function
takes a tensor and returns a float32 scalar. Computations run in float32 whatever
the input dtype (a float16 sum of squares overflows past 65,504).

Numerical safety. Hoyer, Hoyer-Square and Group-HS are scale invariant, so they
are evaluated on ``w / max|w|`` (the maximum held constant for the gradient).
This is exact, value and gradient alike: for a function homogeneous of degree 0,
``grad f(w / c) / c = grad f(w)``. It keeps squares away from underflow and
overflow, and an all-zero tensor gives 0 with a zero gradient.
"""

import tensorflow as tf


def _as_float32(x):
    x = tf.convert_to_tensor(x)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    return x


def _normalized(w):
    """``(w / max|w|, is_nonzero)`` with the maximum outside the gradient."""
    peak = tf.stop_gradient(tf.reduce_max(tf.abs(w)))
    nonzero = peak > 0.0
    return w / tf.where(nonzero, peak, 1.0), nonzero


def _safe_norms(w, keep_axes):
    """L2 norm of each group; groups index the `keep_axes` of `w`.

    The square root has an infinite derivative at 0; a zero group gets norm 0
    and gradient 0 instead of NaN.
    """
    rank = w.shape.rank
    keep = {axis % rank for axis in keep_axes}
    reduce_axes = [axis for axis in range(rank) if axis not in keep]
    squares = tf.reduce_sum(tf.square(w), axis=reduce_axes)
    positive = squares > 0.0
    return tf.where(positive, tf.sqrt(tf.where(positive, squares, 1.0)), 0.0)


def hoyer(w):
    """Hoyer regularizer ``R(W) = sum|w_i| / sqrt(sum w_i^2)`` (eq. 2); 0 for W = 0."""
    u, _ = _normalized(_as_float32(w))
    l1 = tf.reduce_sum(tf.abs(u))
    l2 = tf.sqrt(tf.maximum(tf.reduce_sum(tf.square(u)), 1.0))
    return l1 / l2


def hoyer_square(w):
    """Hoyer-Square ``H_S(W) = (sum|w_i|)^2 / sum w_i^2`` (eq. 3); 0 for W = 0."""
    u, _ = _normalized(_as_float32(w))
    l1 = tf.reduce_sum(tf.abs(u))
    # sum u^2 >= 1 whenever W != 0 (the largest |u| is exactly 1), and W = 0
    # gives l1 = 0: the maximum only protects the all-zero case.
    return tf.square(l1) / tf.maximum(tf.reduce_sum(tf.square(u)), 1.0)


def group_lasso(w, keep_axes):
    """Group lasso ``R_G(W) = sum_g ||w^(g)||_2`` (eq. 5).

    Not scale invariant: evaluated as ``max|w| * R_G(w / max|w|)`` to stay clear
    of overflow in the squares.
    """
    w = _as_float32(w)
    peak = tf.stop_gradient(tf.reduce_max(tf.abs(w)))
    scale = tf.where(peak > 0.0, peak, 1.0)
    return scale * tf.reduce_sum(_safe_norms(w / scale, keep_axes))


def group_hoyer_square(w, keep_axes):
    """Group-HS ``G_H(W) = (sum_g ||w^(g)||_2)^2 / sum_g ||w^(g)||_2^2`` (eq. 6).

    The groups partition W, so the denominator is ``||W||_2^2``.
    """
    u, _ = _normalized(_as_float32(w))
    norms = _safe_norms(u, keep_axes)
    return tf.square(tf.reduce_sum(norms)) / tf.maximum(
        tf.reduce_sum(tf.square(u)), 1.0
    )


def hoyer_measure(w):
    """Hoyer's sparsity measure ``S(W) = (sqrt(N) - R(W)) / (sqrt(N) - 1)`` (eq. 1).

    1 for a single nonzero element, 0 for all elements equal in magnitude. An
    all-zero tensor gives 1 (by convention, fully sparse); a one-element tensor 0.
    """
    w = _as_float32(w)
    n = tf.cast(tf.size(w), tf.float32)
    root = tf.sqrt(n)
    _, nonzero = _normalized(w)
    ratio = tf.where(nonzero, hoyer(w), 1.0)
    return tf.where(n > 1.0, (root - ratio) / tf.maximum(root - 1.0, 1e-12), 0.0)
