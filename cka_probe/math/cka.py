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

Results are float64 and never clamped: the biased estimator lies in [0, 1] by Cauchy-Schwarz,
the unbiased one can leave that interval by sampling noise, and callers see it as it is. A layer
whose features do not vary over the examples has no defined CKA: its row or column is NaN and a
:class:`ZeroVarianceWarning` names it.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import NonFiniteFeatureError, ShapeError
from .kernels import center_features, center_gram, center_gram_unbiased, gram_linear, gram_rbf

__all__ = [
    "KERNELS",
    "LabeledMatrix",
    "ZeroVarianceWarning",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "rbf_cka",
    "cka_matrix",
    "centered_grams",
]

KERNELS = ("linear", "rbf")

# A layer counts as constant when its centred features are this small relative to the raw ones.
# Features come from float32 (or narrower) activations, whose relative resolution is ~6e-8, so any
# variation they can represent is far above this threshold.
_ZERO_VARIANCE_RTOL = 1e-12

class ZeroVarianceWarning(UserWarning):
    """A layer's features are constant over the examples; its CKA is NaN."""


@dataclass(frozen=True)
class LabeledMatrix:
    """A CKA matrix with the layer names of its rows and columns, in step with them.

    Attributes:
        values: ``(len(rows), len(cols))`` float64 tensor.
        rows: names of the first argument's layers, in its order.
        cols: names of the second argument's layers, in its order.
    """

    values: torch.Tensor
    rows: tuple[str, ...]
    cols: tuple[str, ...]

    def __post_init__(self) -> None:
        if tuple(self.values.shape) != (len(self.rows), len(self.cols)):
            raise ShapeError(
                f"matrix of shape {tuple(self.values.shape)} does not fit {len(self.rows)} row and "
                f"{len(self.cols)} column names"
            )

    @property
    def shape(self) -> tuple[int, int]:
        return (len(self.rows), len(self.cols))

    def __getitem__(self, key: tuple[str, str]) -> float:
        """``matrix["layer_a", "layer_b"]``: one cell by names."""
        row, col = key
        return float(self.values[self.rows.index(row), self.cols.index(col)])


def hsic_biased(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """Biased HSIC of Gretton et al. (2005): ``tr(K H L H) / (n - 1)^2``.

    Args:
        gram_x: ``(n, n)`` kernel matrix K (not centred).
        gram_y: ``(n, n)`` kernel matrix L (not centred).

    Returns:
        0-d float64 tensor.
    """
    n = _check_gram_pair(gram_x, gram_y, min_n=2)
    return (center_gram(gram_x) * center_gram(gram_y)).sum() / (n - 1) ** 2


def hsic_unbiased(gram_x: torch.Tensor, gram_y: torch.Tensor) -> torch.Tensor:
    """Unbiased HSIC of Song et al. (2012, eq. 5), computed as ``<U(K), U(L)>_F / (n (n-3))``.

    Args:
        gram_x: ``(n, n)`` kernel matrix K.
        gram_y: ``(n, n)`` kernel matrix L.

    Returns:
        0-d float64 tensor.

    Raises:
        ShapeError: fewer than 4 examples.
    """
    n = _check_gram_pair(gram_x, gram_y, min_n=4)
    return (center_gram_unbiased(gram_x) * center_gram_unbiased(gram_y)).sum() / (n * (n - 3))


def linear_cka(x: torch.Tensor, y: torch.Tensor, unbiased: bool = False) -> torch.Tensor:
    """Linear CKA of Kornblith et al. (2019).

    Biased (default)::

        CKA = ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F * ||Y_c^T Y_c||_F)

    where ``X_c``, ``Y_c`` are the column-centred features; this equals the Gram-space form with
    ``HSIC_0``. With ``unbiased=True`` the HSICs are Song et al.'s unbiased estimator (the
    "debiased" linear CKA; needs n >= 4).

    Args:
        x: ``(n, p)`` features of the first representation.
        y: ``(n, q)`` features of the second representation, same n examples.
        unbiased: use the unbiased HSIC estimator.

    Returns:
        0-d float64 tensor; NaN with a :class:`ZeroVarianceWarning` when either side is constant.

    Example:
        >>> import torch
        >>> x = torch.randn(64, 10, generator=torch.Generator().manual_seed(0))
        >>> round(float(linear_cka(x, 3.0 * x)), 12)
        1.0
    """
    x, y = _prepare_pair(x, y, unbiased)
    if unbiased:
        return _cka_from_grams(gram_linear(x), gram_linear(y), unbiased=True)
    p, q, n = x.shape[1], y.shape[1], x.shape[0]
    if max(p, q) < n:
        return _linear_cka_features(x, y)
    return _cka_from_grams(gram_linear(x), gram_linear(y), unbiased=False)


def rbf_cka(x: torch.Tensor, y: torch.Tensor, sigma_frac: float = 1.0, unbiased: bool = False) -> torch.Tensor:
    """CKA with RBF kernels whose bandwidth is ``sigma_frac`` times the median distance.

    ``sigma = sigma_frac * sqrt(median ||x_i - x_j||^2)``, the median over the full distance
    matrix, as in Kornblith et al.'s reference code (see :func:`~cka_probe.math.kernels.gram_rbf`).

    Args:
        x: ``(n, p)`` features.
        y: ``(n, q)`` features.
        sigma_frac: bandwidth fraction of the median distance.
        unbiased: use the unbiased HSIC estimator.

    Returns:
        0-d float64 tensor; NaN with a warning when either side is constant.
    """
    x, y = _prepare_pair(x, y, unbiased)
    return _cka_from_grams(gram_rbf(x, sigma_frac), gram_rbf(y, sigma_frac), unbiased=unbiased)


def centered_grams(
    features: Sequence[torch.Tensor],
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
) -> torch.Tensor:
    """Stack the centred Gram matrices of several layers, flattened: ``(L, n*n)`` float64.

    The biased estimator centres with ``H K H``, the unbiased one U-centres. Each row's squared
    norm is ``n``-scaled HSIC(K, K), and the product of two rows the scaled HSIC(K, L), so the
    CKA of all layer pairs is one matrix product of these stacks.

    Args:
        features: ``(n, d_i)`` tensors, already validated (finite, same n).
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: U-centre instead of double-centre.
        sigma_frac: RBF bandwidth fraction.
    """
    _check_kernel(kernel)
    rows = []
    for feats in features:
        centered = center_features(feats)
        gram = gram_linear(centered) if kernel == "linear" else gram_rbf(centered, sigma_frac)
        if unbiased:
            gram = center_gram_unbiased(gram)
        elif kernel != "linear":
            gram = center_gram(gram)  # the linear Gram of centred features is already H K H
        rows.append(gram.reshape(-1))
    return torch.stack(rows)


def cka_matrix(
    feats_a: Sequence[torch.Tensor] | Mapping[str, torch.Tensor],
    feats_b: Sequence[torch.Tensor] | Mapping[str, torch.Tensor] | None = None,
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
) -> torch.Tensor | LabeledMatrix:
    """CKA of every layer of ``feats_a`` against every layer of ``feats_b``, vectorized.

    The centred Grams of each side are stacked as ``(L, n^2)`` matrices ``G_a`` and ``G_b``; then
    ``CKA = (G_a G_b^T) / (||G_a||_rows ||G_b||_rows^T)``: one matrix product for all pairs,
    accumulated in float64. Equal to calling :func:`linear_cka` / :func:`rbf_cka` on each pair.

    Args:
        feats_a: ``(n, d_i)`` tensors, as a sequence or a name -> tensor mapping.
        feats_b: the same for the second model; ``None`` compares ``feats_a`` with itself.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: use the unbiased HSIC estimator (Song et al. 2012).
        sigma_frac: RBF bandwidth fraction of the median distance.

    Returns:
        ``(L_a, L_b)`` float64 tensor, or a :class:`LabeledMatrix` carrying the names when both
        inputs are mappings. Rows or columns of constant layers are NaN (with a warning).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> feats = {"conv1": torch.randn(32, 8, generator=g), "conv2": torch.randn(32, 4, generator=g)}
        >>> m = cka_matrix(feats)
        >>> m.rows, [round(float(v), 6) for v in m.values.diagonal()]
        (('conv1', 'conv2'), [1.0, 1.0])
    """
    _check_kernel(kernel)
    names_a, tensors_a = _layer_list(feats_a, "feats_a")
    self_compare = feats_b is None
    names_b, tensors_b = (names_a, tensors_a) if self_compare else _layer_list(feats_b, "feats_b")
    _check_examples(tensors_a, names_a, tensors_b, names_b, unbiased)
    device = tensors_a[0].device
    tensors_b = [t.to(device) for t in tensors_b]

    grams_a = centered_grams(tensors_a, kernel, unbiased, sigma_frac)
    grams_b = grams_a if self_compare else centered_grams(tensors_b, kernel, unbiased, sigma_frac)
    cross = grams_a @ grams_b.T
    norms_a = _layer_norms(grams_a, tensors_a, names_a, kernel)
    norms_b = norms_a if self_compare else _layer_norms(grams_b, tensors_b, names_b, kernel)
    values = cross / (norms_a[:, None] * norms_b[None, :])
    if isinstance(feats_a, Mapping) and (self_compare or isinstance(feats_b, Mapping)):
        return LabeledMatrix(values, tuple(names_a), tuple(names_b))
    return values


# --------------------------------------------------------------------------- internals


def _linear_cka_features(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Biased linear CKA in feature space (Kornblith et al. 2019, eq. 5)."""
    xc, yc = center_features(x), center_features(y)
    if _is_constant(x, xc) or _is_constant(y, yc):
        return _nan_with_warning(["x" if _is_constant(x, xc) else "y"])
    cross = torch.linalg.matrix_norm(yc.T @ xc) ** 2
    return cross / (torch.linalg.matrix_norm(xc.T @ xc) * torch.linalg.matrix_norm(yc.T @ yc))


def _cka_from_grams(gram_x: torch.Tensor, gram_y: torch.Tensor, unbiased: bool) -> torch.Tensor:
    center = center_gram_unbiased if unbiased else center_gram
    kx, ky = center(gram_x), center(gram_y)
    norm_x, norm_y = torch.linalg.vector_norm(kx), torch.linalg.vector_norm(ky)
    constant = [name for name, norm, gram in (("x", norm_x, gram_x), ("y", norm_y, gram_y))
                if not torch.isfinite(norm) or norm <= _ZERO_VARIANCE_RTOL * torch.linalg.vector_norm(gram)]
    if constant:
        return _nan_with_warning(constant)
    return (kx * ky).sum() / (norm_x * norm_y)


def _layer_norms(grams: torch.Tensor, tensors: Sequence[torch.Tensor], names: Sequence[str], kernel: str) -> torch.Tensor:
    """Row norms of the stacked centred Grams, NaN for constant layers (with one warning)."""
    norms = torch.linalg.vector_norm(grams, dim=1)
    constant = []
    for i, feats in enumerate(tensors):
        x = feats.to(torch.float64)
        if _is_constant(x, x - x.mean(dim=0, keepdim=True)) or not torch.isfinite(norms[i]) or norms[i] == 0:
            constant.append(i)
    if constant:
        norms = norms.clone()
        norms[constant] = float("nan")
        _warn_constant([names[i] for i in constant])
    return norms


def _is_constant(x: torch.Tensor, centered: torch.Tensor) -> bool:
    scale = torch.linalg.vector_norm(x.to(torch.float64))
    return bool(torch.linalg.vector_norm(centered) <= _ZERO_VARIANCE_RTOL * scale)


def _nan_with_warning(names: Sequence[str]) -> torch.Tensor:
    _warn_constant(names)
    return torch.tensor(float("nan"), dtype=torch.float64)


def _warn_constant(names: Sequence[str]) -> None:
    warnings.warn(
        f"features of layer(s) {', '.join(map(str, names))} are constant over the examples; "
        "their CKA is undefined and set to NaN (check the layer choice or use more varied images)",
        ZeroVarianceWarning,
        stacklevel=3,
    )


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise ValueError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")


def _layer_list(feats, argname: str) -> tuple[list[str], list[torch.Tensor]]:
    if isinstance(feats, torch.Tensor):
        raise ShapeError(f"{argname} must be a sequence or mapping of (n, d) tensors, got one tensor; wrap it in a list")
    if isinstance(feats, Mapping):
        names, tensors = [str(k) for k in feats], list(feats.values())
    else:
        tensors = list(feats)
        names = [f"{argname}[{i}]" for i in range(len(tensors))]
    if not tensors:
        raise ShapeError(f"{argname} holds no layers; pass at least one (n, d) tensor")
    for name, t in zip(names, tensors):
        _check_features(t, name)
    return names, tensors


def _check_features(t: torch.Tensor, name: str) -> None:
    if not isinstance(t, torch.Tensor) or t.ndim != 2:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ShapeError(f"layer {name}: features must be a 2-D (n, d) tensor, got {shape}; pool or flatten them first")
    if not torch.isfinite(t).all():
        raise NonFiniteFeatureError(
            f"layer {name}: features contain NaN or infinity; check the model's numerics "
            "(e.g. run without fp16 autocast) or exclude the layer"
        )


def _check_examples(tensors_a, names_a, tensors_b, names_b, unbiased: bool) -> int:
    sizes = {t.shape[0] for t in tensors_a} | {t.shape[0] for t in tensors_b}
    if len(sizes) > 1:
        by_layer = {**{n: t.shape[0] for n, t in zip(names_a, tensors_a)}, **{n: t.shape[0] for n, t in zip(names_b, tensors_b)}}
        raise ShapeError(
            f"layers have different numbers of examples {sorted(sizes)} ({_first_mismatch(by_layer)}); "
            "both sides must see the same n images"
        )
    n = sizes.pop()
    min_n = 4 if unbiased else 2
    if n < min_n:
        estimator = "the unbiased estimator" if unbiased else "CKA"
        raise ShapeError(f"{estimator} needs at least {min_n} examples, got n={n}; use more images")
    return n


def _first_mismatch(by_layer: dict[str, int]) -> str:
    items = list(by_layer.items())
    first_name, first_n = items[0]
    for name, n in items[1:]:
        if n != first_n:
            return f"{first_name}: n={first_n}, {name}: n={n}"
    return ""


def _prepare_pair(x: torch.Tensor, y: torch.Tensor, unbiased: bool) -> tuple[torch.Tensor, torch.Tensor]:
    _check_features(x, "x")
    _check_features(y, "y")
    _check_examples([x], ["x"], [y], ["y"], unbiased)
    return x.to(torch.float64), y.to(device=x.device, dtype=torch.float64)


def _check_gram_pair(gram_x: torch.Tensor, gram_y: torch.Tensor, min_n: int) -> int:
    if gram_x.ndim != 2 or gram_x.shape[0] != gram_x.shape[1] or gram_x.shape != gram_y.shape:
        raise ShapeError(
            f"kernel matrices must be square and of one shape, got {tuple(gram_x.shape)} and {tuple(gram_y.shape)}"
        )
    n = gram_x.shape[0]
    if n < min_n:
        raise ShapeError(f"this HSIC estimator needs at least {min_n} examples, got n={n}; use more images")
    return n
