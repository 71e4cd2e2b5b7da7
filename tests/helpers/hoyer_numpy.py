"""NumPy references of the paper's measures and gradients (float64), and test kernels."""

import numpy as np


def random_kernel(shape, seed=0, zero_fraction=0.3):
    """A float32 normal kernel with about `zero_fraction` of its entries zero."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=shape).astype(np.float32)
    w[rng.random(shape) < zero_fraction] = 0.0
    return w


def np_hoyer(w):
    s = np.sum(np.float64(w) ** 2)
    return 0.0 if s == 0 else np.sum(np.abs(w)) / np.sqrt(s)


def np_hoyer_square(w):
    s = np.sum(np.float64(w) ** 2)
    return 0.0 if s == 0 else np.sum(np.abs(np.float64(w))) ** 2 / s


def np_group_norms(w, keep_axes):
    w = np.float64(w)
    keep = {a % w.ndim for a in keep_axes}
    reduce = tuple(a for a in range(w.ndim) if a not in keep)
    return np.sqrt(np.sum(w**2, axis=reduce))


KEEP = {"outputs": (-1,), "inputs": (-2,)}


def np_group_hs(w, groups):
    kinds = ("outputs", "inputs") if groups == "both" else (groups,)
    total = 0.0
    for kind in kinds:
        norms = np_group_norms(w, KEEP[kind])
        s = np.sum(norms**2)
        total += 0.0 if s == 0 else np.sum(norms) ** 2 / s
    return total


def np_group_lasso(w, groups):
    kinds = ("outputs", "inputs") if groups == "both" else (groups,)
    return sum(np.sum(np_group_norms(w, KEEP[kind])) for kind in kinds)


def np_hs_gradient(w):
    """Paper eq. 4."""
    w = np.float64(w)
    a, s = np.sum(np.abs(w)), np.sum(w**2)
    return 2 * np.sign(w) * a / s**2 * (s - np.abs(w) * a)


def np_hoyer_gradient(w):
    w = np.float64(w)
    a, s = np.sum(np.abs(w)), np.sum(w**2)
    return np.sign(w) / np.sqrt(s) - a * w / s**1.5


def np_group_hs_gradient(w, kind):
    """Appendix eq. 10: d G_H / d w_j = 2 A / S^2 (S w_j / ||w^(g(j))|| - A w_j)."""
    w = np.float64(w)
    keep = {a % w.ndim for a in KEEP[kind]}
    reduce = tuple(a for a in range(w.ndim) if a not in keep)
    norms = np.sqrt(np.sum(w**2, axis=reduce, keepdims=True))
    a, s = np.sum(norms), np.sum(w**2)
    ratio = np.divide(w, norms, out=np.zeros_like(w), where=norms > 0)
    return 2 * a / s**2 * (s * ratio - a * w)
