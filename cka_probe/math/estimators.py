"""HSIC estimators and Centered Kernel Alignment (CKA).

CKA between representations ``X`` (n x p) and ``Y`` (n x q) of the same n examples
(Kornblith et al., ICML 2019, eq. 4)::

    CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) * HSIC(L, L))

with kernel matrices ``K = k(X)``, ``L = l(Y)``. Two HSIC estimators are offered:

* biased (Gretton et al. 2005): ``HSIC_0(K, L) = tr(K H L H) / (n-1)^2``;
* unbiased (Song et al. 2012): ``HSIC_1(K, L) = <U(K), U(L)>_F / (n (n-3))``, with ``U`` the
  U-centring of :func:`~cka_probe.math.kernels.center_gram_unbiased` (the "debiased CKA").

For the linear kernel the biased CKA has the feature-space form
``||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F)`` (Kornblith et al. 2019, eq. 5).

Every layer may be given as ``(n, d)`` features or as a :class:`~cka_probe.math.kernels.Gram`
(its ``(n, n)`` linear Gram ``X X^T``, e.g. of a flattened activation): linear CKA needs only
``K``, and the RBF kernel's squared distances are ``K_ii + K_jj - 2 K_ij``.

Results are float64 and never clamped: the biased estimator lies in [0, 1] by Cauchy-Schwarz,
the unbiased one can leave that interval by sampling noise, and callers see it as it is.

Layers are checked in :mod:`~cka_probe.math.checks` (which also holds the constant-layer test), and
each pair's centred kernels come from the all-pairs engine, :mod:`~cka_probe.math.engine`.
"""

from __future__ import annotations

import torch

from .checks import _check_finite, _check_gram_pair, _nan_with_warning, _prepare_pair, constant_layers
from .engine import _pair_cka
from .kernels import Gram, center_features, center_gram, center_gram_unbiased, check_sigma_frac, gram_linear

__all__ = ["hsic_biased", "hsic_unbiased", "linear_cka", "rbf_cka"]


def hsic_biased(gram_x: torch.Tensor | Gram, gram_y: torch.Tensor | Gram) -> torch.Tensor:
    """Biased HSIC of Gretton et al. (2005): ``tr(K H L H) / (n - 1)^2``.

    Args:
        gram_x: ``(n, n)`` kernel matrix K (not centred), or a :class:`Gram`.
        gram_y: ``(n, n)`` kernel matrix L (not centred), or a :class:`Gram`.

    Returns:
        0-d float64 tensor.
    """
    gram_x, gram_y = (
        gram_linear(gram_x) if isinstance(gram_x, Gram) else gram_x,
        gram_linear(gram_y) if isinstance(gram_y, Gram) else gram_y,
    )
    n = _check_gram_pair(gram_x, gram_y, min_n=2)
    return (center_gram(gram_x) * center_gram(gram_y)).sum() / (n - 1) ** 2


def hsic_unbiased(gram_x: torch.Tensor | Gram, gram_y: torch.Tensor | Gram) -> torch.Tensor:
    """Unbiased HSIC of Song et al. (2012, eq. 5), computed as ``<U(K), U(L)>_F / (n (n-3))``.

    Args:
        gram_x: ``(n, n)`` kernel matrix K, or a :class:`Gram`.
        gram_y: ``(n, n)`` kernel matrix L, or a :class:`Gram`.

    Returns:
        0-d float64 tensor.

    Raises:
        ShapeError: fewer than 4 examples.
    """
    gram_x, gram_y = (
        gram_linear(gram_x) if isinstance(gram_x, Gram) else gram_x,
        gram_linear(gram_y) if isinstance(gram_y, Gram) else gram_y,
    )
    n = _check_gram_pair(gram_x, gram_y, min_n=4)
    return (center_gram_unbiased(gram_x) * center_gram_unbiased(gram_y)).sum() / (n * (n - 3))


def linear_cka(x: torch.Tensor | Gram, y: torch.Tensor | Gram, unbiased: bool = False) -> torch.Tensor:
    """Linear CKA of Kornblith et al. (2019).

    Biased (default)::

        CKA = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F * ||Y_c^T Y_c||_F)

    where ``X_c``, ``Y_c`` are the column-centred features; this equals the Gram-space form
    ``<H K H, H L H>_F / (||H K H||_F ||H L H||_F)`` with ``K = X_c X_c^T``, used when a side is a
    :class:`Gram` or ``max(p, q) >= n``. With ``unbiased=True`` the HSICs are Song et al.'s unbiased
    estimator (the "debiased" linear CKA; needs n >= 4), on the Grams of the centred features.

    Args:
        x: ``(n, p)`` features of the first representation, or its :class:`Gram`.
        y: ``(n, q)`` features of the second representation (same n examples), or its :class:`Gram`.
        unbiased: use the unbiased HSIC estimator.

    Returns:
        0-d float64 tensor; NaN with a :class:`ZeroVarianceWarning` naming ``x``, ``y`` or both
        when they are constant.

    Example:
        >>> import torch
        >>> x = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
        >>> round(float(linear_cka(x, 3.0 * x)), 12)
        1.0
    """
    x, y = _prepare_pair(x, y, unbiased)
    features = not isinstance(x, Gram) and not isinstance(y, Gram)
    if features and not unbiased and max(x.shape[1], y.shape[1]) < x.shape[0]:
        return _linear_cka_features(x, y)
    return _pair_cka(x, y, "linear", unbiased, 1.0)


def rbf_cka(
    x: torch.Tensor | Gram, y: torch.Tensor | Gram, sigma_frac: float = 1.0, unbiased: bool = False
) -> torch.Tensor:
    """CKA with RBF kernels whose bandwidth is ``sigma_frac`` times the median distance.

    ``sigma = sigma_frac * sqrt(median ||x_i - x_j||^2)``, the median over the full distance
    matrix, as in Kornblith et al.'s reference code (see :func:`~cka_probe.math.kernels.gram_rbf`);
    identical rows are exactly 0 apart, so the result does not depend on the order of the examples.
    A side given as a :class:`Gram` gets its distances as ``K_ii + K_jj - 2 K_ij``.

    Args:
        x: ``(n, p)`` features, or a :class:`Gram`.
        y: ``(n, q)`` features, or a :class:`Gram`.
        sigma_frac: bandwidth fraction of the median distance.
        unbiased: use the unbiased HSIC estimator.

    Returns:
        0-d float64 tensor; NaN with a warning when either side is constant.
    """
    check_sigma_frac(sigma_frac)
    x, y = _prepare_pair(x, y, unbiased)
    return _pair_cka(x, y, "rbf", unbiased, sigma_frac)


def _linear_cka_features(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased linear CKA in feature space (Kornblith et al. 2019, eq. 5)."""
    xc, yc = center_features(x), center_features(y)
    scale_x, scale_y = x.to(torch.float64).square().sum(), y.to(torch.float64).square().sum()
    _check_finite(torch.isfinite(torch.stack([scale_x, scale_y])), [0, 1], ["x", "y"], "features")
    constant = constant_layers(torch.stack([xc.square().sum(), yc.square().sum()]), torch.stack([scale_x, scale_y]))
    if bool(constant.any()):
        return _nan_with_warning([name for name, c in zip(("x", "y"), constant.tolist()) if c])
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    return cross / (torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc))
