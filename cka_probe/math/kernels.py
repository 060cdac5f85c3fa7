"""Gram matrices and their centering.

Every function here takes and returns float64 tensors on the input's device and works on a
single ``(n, n)`` matrix or a stack ``(..., n, n)``. Feature matrices are ``(n, d)``: one row
per example.

References:
    Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network Representations Revisited."
    ICML 2019 (linear and RBF kernels, median bandwidth).

    Song, Smola, Gretton, Bedo, Borgwardt. "Feature Selection via Dependence Maximization."
    JMLR 13, 2012 (the unbiased HSIC estimator).

    Szekely, Rizzo. "Partial distance correlation with methods for dissimilarities."
    Annals of Statistics 42(6), 2014 (U-centering: the inner product of U-centred matrices
    equals n(n-3) times the unbiased HSIC of Song et al.).
"""

from __future__ import annotations

import torch

__all__ = [
    "center_features",
    "gram_linear",
    "gram_rbf",
    "center_gram",
    "center_gram_unbiased",
]


def center_features(x: torch.Tensor) -> torch.Tensor:
    """Subtract each feature's mean over the examples: ``x - 1 mean(x)^T`` in float64.

    Args:
        x: features, shape ``(n, d)``.

    Returns:
        The centred features, float64, shape ``(n, d)``.
    """
    x = x.to(torch.float64)
    return x - x.mean(dim=0, keepdim=True)


def gram_linear(x: torch.Tensor) -> torch.Tensor:
    """Linear kernel ``K = X X^T``.

    Centring the features first leaves every centred Gram below unchanged (for ``center_gram``
    because ``H 1 = 0``; for ``center_gram_unbiased`` because U-centring removes symmetric row
    and column offsets), and it is better conditioned, so callers usually pass
    :func:`center_features` of their data.

    Args:
        x: features, shape ``(n, d)``.

    Returns:
        ``(n, n)`` float64 Gram matrix.

    Example:
        >>> import torch
        >>> gram_linear(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([[1., 0.],
                [0., 4.]], dtype=torch.float64)
    """
    x = x.to(torch.float64)
    return x @ x.T


def gram_rbf(x: torch.Tensor, sigma_frac: float = 1.0) -> torch.Tensor:
    """RBF kernel with the median-distance bandwidth of Kornblith et al. (2019).

    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with
    ``sigma^2 = sigma_frac^2 * median_{i,j} ||x_i - x_j||^2``, the median taken over the full
    ``n x n`` matrix of squared distances, zeros of the diagonal included, as in the authors'
    reference code.

    Args:
        x: features, shape ``(n, d)``.
        sigma_frac: bandwidth as a fraction of the median distance (must be > 0).

    Returns:
        ``(n, n)`` float64 kernel matrix. If the median squared distance is 0 (more than half
        of the pairs coincide) the bandwidth is undefined and the result is all NaN.
    """
    if not sigma_frac > 0:
        raise ValueError(f"sigma_frac must be > 0, got {sigma_frac}; pass a positive bandwidth fraction")
    x = center_features(x)
    sq_norms = (x * x).sum(dim=1)
    sq_dist = sq_norms[:, None] + sq_norms[None, :] - 2.0 * (x @ x.T)
    sq_dist = sq_dist.clamp_min(0.0)  # rounding can make tiny distances negative
    sq_dist.fill_diagonal_(0.0)
    median = _median_numpy_style(sq_dist.flatten())
    if median <= 0:
        return torch.full_like(sq_dist, float("nan"))
    return torch.exp(-sq_dist / (2.0 * sigma_frac**2 * median))


def _median_numpy_style(values: torch.Tensor) -> torch.Tensor:
    """Median that averages the two middle values of an even count, as NumPy's (and so Kornblith's
    reference code) does; ``torch.median`` would return the lower one."""
    sorted_values, _ = torch.sort(values)
    k = sorted_values.numel()
    if k % 2:
        return sorted_values[k // 2]
    return 0.5 * (sorted_values[k // 2 - 1] + sorted_values[k // 2])


def center_gram(gram: torch.Tensor) -> torch.Tensor:
    """Double centring ``H K H`` with ``H = I - 11^T / n`` (biased HSIC, Gretton et al. 2005).

    Args:
        gram: ``(..., n, n)`` symmetric kernel matrices.

    Returns:
        ``(..., n, n)`` float64 centred matrices.
    """
    gram = gram.to(torch.float64)
    row_means = gram.mean(dim=-1, keepdim=True)
    col_means = gram.mean(dim=-2, keepdim=True)
    grand_mean = row_means.mean(dim=-2, keepdim=True)
    return gram - row_means - col_means + grand_mean


def center_gram_unbiased(gram: torch.Tensor) -> torch.Tensor:
    """U-centring (Szekely & Rizzo 2014), the centring behind the unbiased HSIC.

    With ``K~`` equal to ``K`` with a zero diagonal, for ``i != j``::

        U(K)_ij = K~_ij - sum_l K~_il / (n-2) - sum_k K~_kj / (n-2)
                  + sum_kl K~_kl / ((n-1)(n-2))

    and ``U(K)_ii = 0``. Then ``<U(K), U(L)>_F / (n (n-3))`` is the unbiased HSIC estimator of
    Song et al. (2012); this is also the centring of the "debiased CKA" in Kornblith's
    reference notebook.

    Args:
        gram: ``(..., n, n)`` symmetric kernel matrices, ``n >= 4``.

    Returns:
        ``(..., n, n)`` float64 U-centred matrices.
    """
    gram = gram.to(torch.float64)
    n = gram.shape[-1]
    if n < 4:
        raise ValueError(f"U-centring needs n >= 4 examples, got n={n}; use more images or the biased estimator")
    eye = torch.eye(n, dtype=torch.bool, device=gram.device)
    gram = gram.masked_fill(eye, 0.0)
    means = gram.sum(dim=-1) / (n - 2)
    means = means - means.sum(dim=-1, keepdim=True) / (2 * (n - 1))
    centered = gram - means[..., :, None] - means[..., None, :]
    return centered.masked_fill(eye, 0.0)
