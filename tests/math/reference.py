"""Float64 NumPy reference for the CKA estimators, written from the papers' formulas.

Independent of cka_probe: explicit centring matrices, Song et al.'s closed form of the unbiased
HSIC (not U-centring), NumPy's median.
"""

from __future__ import annotations

import numpy as np


def gram_linear(x: np.ndarray) -> np.ndarray:
    return x @ x.T


def gram_rbf(x: np.ndarray, sigma_frac: float = 1.0) -> np.ndarray:
    diff = x[:, None, :] - x[None, :, :]
    sq_dist = (diff**2).sum(-1)
    sigma_sq = sigma_frac**2 * np.median(sq_dist)
    return np.exp(-sq_dist / (2.0 * sigma_sq))


def hsic_biased(k: np.ndarray, l: np.ndarray) -> float:
    """Gretton et al. 2005: tr(K H L H) / (n - 1)^2."""
    n = k.shape[0]
    h = np.eye(n) - np.ones((n, n)) / n
    return float(np.trace(k @ h @ l @ h) / (n - 1) ** 2)


def hsic_unbiased(k: np.ndarray, l: np.ndarray) -> float:
    """Song et al. 2012, eq. 5, with K~ and L~ the kernels with zeroed diagonals."""
    n = k.shape[0]
    kt = k - np.diag(np.diag(k))
    lt = l - np.diag(np.diag(l))
    one = np.ones(n)
    term1 = np.trace(kt @ lt)
    term2 = (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
    term3 = 2.0 / (n - 2) * (one @ kt @ lt @ one)
    return float((term1 + term2 - term3) / (n * (n - 3)))


def cka(k: np.ndarray, l: np.ndarray, unbiased: bool = False) -> float:
    hsic = hsic_unbiased if unbiased else hsic_biased
    return hsic(k, l) / np.sqrt(hsic(k, k) * hsic(l, l))


def linear_cka(x, y, unbiased=False) -> float:
    return cka(gram_linear(x), gram_linear(y), unbiased)


def rbf_cka(x, y, sigma_frac=1.0, unbiased=False) -> float:
    return cka(gram_rbf(x, sigma_frac), gram_rbf(y, sigma_frac), unbiased)


def minibatch_cka(batches_x, batches_y, kernel=gram_linear) -> float:
    """Nguyen, Raghu, Kornblith 2021: mean unbiased HSICs over batches, then normalise."""
    xy = np.mean([hsic_unbiased(kernel(x), kernel(y)) for x, y in zip(batches_x, batches_y)])
    xx = np.mean([hsic_unbiased(kernel(x), kernel(x)) for x in batches_x])
    yy = np.mean([hsic_unbiased(kernel(y), kernel(y)) for y in batches_y])
    return float(xy / np.sqrt(xx * yy))


def gram_rbf_from_linear(k: np.ndarray, sigma_frac: float = 1.0) -> np.ndarray:
    """RBF kernel from a linear Gram K = X X^T: ||x_i - x_j||^2 = K_ii + K_jj - 2 K_ij (0 where rows of K,
    and so the examples, are identical), bandwidth from NumPy's median as in gram_rbf."""
    diag = np.diag(k)
    sq_dist = np.maximum(diag[:, None] + diag[None, :] - 2.0 * k, 0.0)
    sq_dist[(k[:, None, :] == k[None, :, :]).all(-1)] = 0.0
    sigma_sq = sigma_frac**2 * np.median(sq_dist)
    return np.exp(-sq_dist / (2.0 * sigma_sq))
