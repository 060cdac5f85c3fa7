"""Resampling statistics for CKA: a permutation test of independence and bootstrap intervals.

Both work on every cell of the ``(L_a, L_b)`` CKA matrix at once and share their random draws
across cells: one permutation (or one resample of the examples) per draw, applied to every layer,
so that the cells of one draw are computed from the same shuffled data, as a loop over cells
with a common seed would.

The draws come from a CPU :class:`torch.Generator` seeded with ``seed``, one ``torch.randperm``
(or ``torch.randint``) call per draw: the same seed gives the same draws on every device and for
any chunk size, and :func:`_permutations` / :func:`_resample_indices` return them for inspection.

References:
    Phipson, Smyth. "Permutation P-values Should Never Be Zero: Calculating Exact P-values When
    Permutations Are Randomly Drawn." Statistical Applications in Genetics and Molecular Biology
    9(1), Article 39, 2010.

    Efron, Tibshirani. "An Introduction to the Bootstrap." Chapman & Hall, 1993 (Chapter 13, the
    percentile interval).

    Song, Smola, Gretton, Bedo, Borgwardt. "Feature Selection via Dependence Maximization."
    JMLR 13, 2012 (the unbiased HSIC, a U-statistic of order 4).

    Kornblith, Norouzi, Lee, Hinton. "Similarity of Neural Network Representations Revisited."
    ICML 2019 (CKA, the median-distance RBF bandwidth).
"""

from __future__ import annotations

import numbers
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..errors import CKAProbeError
from .checks import ZeroVarianceWarning, _check_examples, _check_kernel, _layer_list
from .engine import LabeledMatrix, _stack_pair
from .kernels import Gram, check_sigma_frac, squared_distances, symmetric_gram

__all__ = ["bootstrap_ci", "bootstrap_replicates", "percentile_interval", "permutation_test"]

# Draws are processed in chunks whose largest temporary holds about this many float64 numbers
# (128 MiB), whatever the number of draws.
_CHUNK_ELEMENTS = 2**24

# A permuted CKA within this distance of the observed one counts as a tie (and so as ">="): CKA
# lies in [-1, 1], and the permuted and observed values are summed in different orders, so an
# exact tie (e.g. a permutation that leaves the statistic unchanged) may differ by rounding.
_TIE_TOLERANCE = 1e-12


def permutation_test(
    feats_a: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram],
    feats_b: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram] | None = None,
    num_permutations: int = 1000,
    seed: int = 0,
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
) -> torch.Tensor | LabeledMatrix:
    """Permutation p-values of every layer pair's CKA against independence.

    Null hypothesis: the two representations are independent, i.e. the pairing of the examples
    between ``feats_a`` and ``feats_b`` carries no alignment. Under it every reordering of the
    examples of one side is as likely as the observed pairing. Each draw shuffles the examples
    of side B with one permutation ``pi`` (rows ``Y[pi]``), the same ``pi`` for every layer of B,
    and recomputes every cell. The test is one-sided (more alignment than chance)::

        p = (1 + #{k : CKA_k >= CKA_observed}) / (K + 1)

    with ``K = num_permutations`` random permutations, the exact p-value for randomly drawn
    permutations of Phipson & Smyth (2010): never 0, smallest value ``1 / (K + 1)``, and a
    test that rejects when ``p <= alpha`` has level at most ``alpha``.

    Vectorization: with ``P`` the permutation matrix, the kernel of the shuffled features is
    ``P K P^T`` (for the RBF kernel too: the multiset of pairwise distances, and so the median
    bandwidth, does not change). Centring commutes with the shuffle: ``P 1 = 1`` gives
    ``P H P^T = H`` and ``H (P K P^T) H = P (H K H) P^T``; U-centring uses the row sums, the total
    and the diagonal, which ``P . P^T`` permutes, keeps and maps onto the diagonal, so
    ``U(P K P^T) = P U(K) P^T``. The Frobenius norms of the centred Grams, the CKA denominators,
    are therefore the observed ones, and each draw needs only the cross products
    ``G_a vec(P K_b P^T)`` of all cells: one gather of B's centred Grams and one matrix product
    per chunk of permutations (``O(K L_a L_b n^2)`` in all, memory bounded by the chunk size).

    Args:
        feats_a: ``(n, d_i)`` tensors or ``(n, n)`` :class:`Gram`, as a sequence or a name -> layer
            mapping.
        feats_b: the second representation's; ``None`` tests ``feats_a`` against itself.
        num_permutations: number of random permutations ``K`` (>= 1).
        seed: seed of the CPU generator that draws the permutations (see
            :func:`_permutations`).
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: use the unbiased HSIC estimator (Song et al. 2012; needs n >= 4).
        sigma_frac: RBF bandwidth fraction of the median distance.

    Returns:
        ``(L_a, L_b)`` float64 p-values, or a :class:`LabeledMatrix` when both inputs are mappings.
        Cells of constant layers (NaN CKA) are NaN, with a :class:`ZeroVarianceWarning`.

    Raises:
        CKAProbeError: ``num_permutations < 1``.
        ShapeError: fewer examples than the estimator needs, or mismatched inputs.

    Example:
        >>> import torch
        >>> x = torch.randn(30, 5, generator=torch.Generator().manual_seed(0))
        >>> p = permutation_test({"a": x}, {"b": x.tanh(), "c": torch.randn(30, 3)}, num_permutations=99)
        >>> p["a", "b"]  # the smallest attainable p-value, 1 / (K + 1)
        0.01
    """
    _check_count(num_permutations, "num_permutations")
    sides = _Sides.from_inputs(feats_a, feats_b, kernel, unbiased, sigma_frac)
    grams_a, grams_b, norms_a, norms_b = _full_sample_grams(sides, kernel, unbiased, sigma_frac)
    scale = norms_a[:, None] * norms_b[None, :]
    observed = (grams_a @ grams_b.T) / scale
    threshold = (observed - _TIE_TOLERANCE)[:, :, None]

    n, num_a, num_b = sides.n, len(sides.names_a), len(sides.names_b)
    exceed = torch.zeros(num_a, num_b, dtype=torch.int64, device=observed.device)
    chunk = max(1, _CHUNK_ELEMENTS // ((num_b + 1) * n * n))
    for perms in _permutation_chunks(n, num_permutations, seed, chunk):
        perms = perms.to(observed.device)
        # (P K P^T)_ij = K_{pi(i) pi(j)}: flat index pi(i) * n + pi(j), one gather for all layers.
        flat_index = (perms[:, :, None] * n + perms[:, None, :]).reshape(-1)
        permuted = grams_b.index_select(1, flat_index).view(num_b * len(perms), n * n)
        cross = (grams_a @ permuted.T).view(num_a, num_b, len(perms))
        exceed += (cross / scale[:, :, None] >= threshold).sum(dim=2)
    p_values = (1.0 + exceed.to(torch.float64)) / (num_permutations + 1)
    p_values[torch.isnan(observed)] = float("nan")
    return sides.wrap(p_values)


def bootstrap_ci(
    feats_a: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram],
    feats_b: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram] | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor] | tuple[LabeledMatrix, LabeledMatrix]:
    """Bootstrap percentile confidence intervals of every layer pair's CKA.

    Each of the ``K = num_resamples`` replicates draws ``n`` example indices with replacement,
    the same indices for both sides and every layer, and recomputes the CKA of every cell on the
    resample, all the estimator's data-dependent steps included (centring, RBF bandwidth). The
    interval is the percentile interval of Efron & Tibshirani (1993, Ch. 13)::

        [q_{(1 - level) / 2}, q_{(1 + level) / 2}]

    of the replicates, with NumPy's default (linear) interpolation between order statistics.

    Vectorization: the Gram matrix of a resample is ``K[idx][:, idx]``, which holds entry
    ``K_ij`` ``w_i w_j`` times, ``w`` the multiplicities of the examples in the resample. So
    every sum over the resample is a ``w``-weighted sum over the original examples, and the
    resample's centring is redone as a weighted centring (``H K_idx H`` for the biased
    estimator, with weighted row means ``m = K w / n``)::

        HSIC_0 (n-1)^2 = <w w^T o K_a, K_b> - (2/n) (w o K_a w)^T (K_b w) + (w^T K_a w)(w^T K_b w) / n^2

    Every term is an inner product of a per-layer transform of A with a per-layer quantity of B,
    so all cells of a chunk of resamples are a few matrix products on the ``n x n`` Grams,
    without gathering resampled matrices.

    Unbiased estimator and duplicates: a resample repeats examples, and its Gram has
    ``K(x_i, x_i)`` (for the linear kernel ``||x_i||^2``) at every off-diagonal position where an
    example meets its own copy. The unbiased estimator (Song et al. 2012) exists to keep exactly
    those self-similarities out; applied naively to the resample it puts them back. For wide
    layers (``d >> n``), where ``||x_i||^2`` dwarfs the cross products, this drags every replicate
    towards the biased estimate and the interval away from the estimate (n = 30, d = 600: naive
    replicates near 0.95 around an estimate of 0.33). So here
    the unbiased replicate is the same U-statistic of order 4 (Song et al. 2012),
    averaged over the position 4-tuples of the resample whose examples are distinct: copies of one
    example never pair up, as an example never pairs with itself in the estimator. In weights::

        HSIC_1* ~ sum over distinct examples i, j, q, r of w_i w_j w_q w_r h(i, j, q, r)

    computed in closed form in ``O(n^2)`` per layer; the normalisation cancels in CKA. A resample
    without duplicates gives the estimator itself. Replicates with fewer than 4 distinct examples
    (possible only for very small n) are undefined.

    RBF bandwidth: re-estimated on every resample, as the median of the resample's ``n x n``
    squared distances (what :func:`~cka_probe.math.kernels.gram_rbf` would compute on
    ``X[idx]``, coincident copies included). The bandwidth is part of the estimator; fixing it
    to the full-sample value would leave its sampling variability out of the interval (the
    plug-in principle, Efron & Tibshirani 1993, Ch. 4). The copies add about ``n`` zero distances
    to the ``n^2``, an ``O(1/n)`` shift of the median quantile.

    Undefined replicates: a layer whose drawn rows are all exactly equal (e.g. a sparse layer whose
    few non-zero examples were all missed) has no CKA on that resample; such replicates are NaN
    and make the interval of their cells NaN, with a :class:`ZeroVarianceWarning` (dropping
    them would condition on the luckier resamples and understate the uncertainty). Constant
    layers give NaN cells as in :func:`~cka_probe.math.engine.cka_matrix`.

    The percentile interval does not correct bias. A resample holds about ``0.632 n`` distinct
    examples, so the biased estimator's replicates carry more of its upward bias than the
    estimate does, and its intervals lean above the estimate (for wide layers and weak alignment
    they can leave it below); the unbiased replicates have no such drift and their intervals are
    centred on the estimate, so prefer ``unbiased=True`` for intervals.

    For independent representations CKA estimators are degenerate U- or V-statistics, for which
    the bootstrap is known to be unreliable: test independence with :func:`permutation_test`.

    Args:
        feats_a: ``(n, d_i)`` tensors or ``(n, n)`` :class:`Gram`, as a sequence or a name -> layer
            mapping (a Gram's resamples are ``K[idx][:, idx]``, its RBF distances
            ``K_ii + K_jj - 2 K_ij``).
        feats_b: the second representation's; ``None`` compares ``feats_a`` with itself.
        num_resamples: number of bootstrap replicates ``K`` (>= 1).
        seed: seed of the CPU generator that draws the resamples (see :func:`_resample_indices`).
        level: confidence level in (0, 1).
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: use the unbiased HSIC estimator (needs n >= 4).
        sigma_frac: RBF bandwidth fraction of the median distance.

    Returns:
        ``(low, high)``: two ``(L_a, L_b)`` float64 tensors, or two :class:`LabeledMatrix` when
        both inputs are mappings.

    Raises:
        CKAProbeError: ``num_resamples < 1`` or ``level`` outside (0, 1).
        ShapeError: fewer examples than the estimator needs, or mismatched inputs.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(50, 4, generator=g)
        >>> y = x + 0.5 * torch.randn(50, 4, generator=g)
        >>> low, high = bootstrap_ci([x], [y], num_resamples=200)
        >>> bool(low[0, 0] < high[0, 0] < 1)
        True
    """
    _check_level(level)
    replicates, wrap = _bootstrap(feats_a, feats_b, num_resamples, seed, kernel, unbiased, sigma_frac)
    low, high = percentile_interval(replicates, level)
    return wrap(low), wrap(high)


def percentile_interval(replicates: torch.Tensor, level: float = 0.95) -> tuple[torch.Tensor, torch.Tensor]:
    """Percentile interval ``[q_{(1 - level) / 2}, q_{(1 + level) / 2}]`` of every cell over the replicates.

    The rule of :func:`bootstrap_ci` (NumPy's linear interpolation; a cell with an undefined (NaN)
    replicate gets a NaN interval), for replicates from :func:`bootstrap_replicates`, so that one set
    of replicates gives both the cells' intervals and those of summaries of the matrix.

    Args:
        replicates: ``(K, ...)`` replicates.
        level: confidence level in (0, 1).

    Returns:
        ``(low, high)``, each of the replicates' shape without the first dimension.

    Example:
        >>> low, high = percentile_interval(torch.arange(11.0)[:, None], level=0.8)
        >>> float(low[0]), float(high[0])
        (1.0, 9.0)
    """
    _check_level(level)
    low = _percentile(replicates, (1.0 - level) / 2.0)
    high = _percentile(replicates, (1.0 + level) / 2.0)
    undefined = torch.isnan(replicates).any(dim=0)
    low[undefined] = float("nan")
    high[undefined] = float("nan")
    return low, high


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise CKAProbeError(f"level must lie in (0, 1), got {level}; pass e.g. 0.95 for a 95% interval")


def bootstrap_replicates(
    feats_a: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram],
    feats_b: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram] | None = None,
    num_resamples: int = 1000,
    seed: int = 0,
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
) -> torch.Tensor:
    """The bootstrap replicates of the whole CKA matrix, from which :func:`bootstrap_ci` takes its percentiles.

    Replicate ``k`` is the ``(L_a, L_b)`` matrix of every cell's CKA on resample ``k`` (the same
    resamples, estimator and rules as :func:`bootstrap_ci`, which this function shares; NaN where a
    replicate is undefined, and in the cells of constant layers). A one-number summary of the matrix
    (say, its diagonal-band mean) applied to every replicate gives that summary's bootstrap
    distribution, with the dependence between cells kept: all cells of a replicate come from one
    resample of the images.

    Args:
        feats_a, feats_b, num_resamples, seed, kernel, unbiased, sigma_frac: as :func:`bootstrap_ci`.

    Returns:
        A ``(num_resamples, L_a, L_b)`` float64 tensor, rows and columns in the inputs' layer order.

    Example:
        >>> import torch
        >>> x = torch.randn(40, 3, generator=torch.Generator().manual_seed(0))
        >>> reps = bootstrap_replicates([x, x.tanh()], [x], num_resamples=50)
        >>> tuple(reps.shape), bool(torch.allclose(reps[:, 0, 0], torch.ones(50, dtype=torch.float64)))
        ((50, 2, 1), True)
    """
    return _bootstrap(feats_a, feats_b, num_resamples, seed, kernel, unbiased, sigma_frac)[0]


def _bootstrap(feats_a, feats_b, num_resamples, seed, kernel, unbiased, sigma_frac):
    """Replicates ``(K, L_a, L_b)`` (NaN where undefined) and the function that labels a matrix as the inputs."""
    _check_count(num_resamples, "num_resamples")
    sides = _Sides.from_inputs(feats_a, feats_b, kernel, unbiased, sigma_frac)
    grams_a, grams_b, norms_a, norms_b = _full_sample_grams(sides, kernel, unbiased, sigma_frac)
    nan_cells = torch.isnan(norms_a)[:, None] | torch.isnan(norms_b)[None, :]

    layers_a = _ResampledLayers(sides.tensors_a, grams_a, kernel, unbiased, sigma_frac)
    layers_b = (
        layers_a if sides.self_compare else _ResampledLayers(sides.tensors_b, grams_b, kernel, unbiased, sigma_frac)
    )
    n, num_a, num_b = sides.n, len(sides.names_a), len(sides.names_b)
    replicates = torch.empty(num_resamples, num_a, num_b, dtype=torch.float64, device=grams_a.device)
    undefined_a = torch.zeros(num_a, dtype=torch.int64, device=grams_a.device)
    undefined_b = torch.zeros(num_b, dtype=torch.int64, device=grams_a.device)
    too_few_distinct = 0
    chunk = max(1, _CHUNK_ELEMENTS // ((2 * (num_a + num_b) + 4) * n * n))
    start = 0
    for indices in _resample_chunks(n, num_resamples, seed, chunk):
        indices = indices.to(grams_a.device)
        counts = torch.zeros(len(indices), n, dtype=torch.int64, device=indices.device)
        counts.scatter_add_(1, indices, torch.ones_like(indices))
        cka, bad_a, bad_b = _resample_cka(layers_a, layers_b, counts, unbiased)
        if unbiased:
            few = (counts > 0).sum(dim=1) < 4
            cka[few] = float("nan")
            too_few_distinct += int(few.sum())
            bad_a, bad_b = bad_a & ~few[:, None], bad_b & ~few[:, None]
        undefined_a += bad_a.sum(dim=0)
        undefined_b += bad_b.sum(dim=0)
        replicates[start : start + len(indices)] = cka
        start += len(indices)

    _warn_undefined(sides, undefined_a, undefined_b, too_few_distinct, num_resamples, nan_cells)
    replicates[:, nan_cells] = float("nan")
    return replicates, sides.wrap


# --------------------------------------------------------------------------- draws


def _permutations(n: int, k: int, seed: int) -> torch.Tensor:
    """The ``(k, n)`` permutations that :func:`permutation_test` draws for ``seed``.

    Row ``t`` is ``torch.randperm(n)`` from a CPU generator seeded with ``seed`` after ``t``
    earlier calls; draw ``t`` shuffles side B to ``Y[perms[t]]``.
    """
    return torch.cat(list(_permutation_chunks(n, k, seed, max(k, 1))))


def _resample_indices(n: int, k: int, seed: int) -> torch.Tensor:
    """The ``(k, n)`` example indices that :func:`bootstrap_ci` draws for ``seed``.

    Row ``t`` is ``torch.randint(n, (n,))`` from a CPU generator seeded with ``seed`` after
    ``t`` earlier calls; replicate ``t`` is the CKA of ``X[idx[t]]`` and ``Y[idx[t]]``.
    """
    return torch.cat(list(_resample_chunks(n, k, seed, max(k, 1))))


def _permutation_chunks(n: int, k: int, seed: int, chunk: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, k, chunk):
        yield torch.stack([torch.randperm(n, generator=generator) for _ in range(min(chunk, k - start))])


def _resample_chunks(n: int, k: int, seed: int, chunk: int) -> Iterator[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    for start in range(0, k, chunk):
        yield torch.stack([torch.randint(n, (n,), generator=generator) for _ in range(min(chunk, k - start))])


# --------------------------------------------------------------------------- inputs


@dataclass(frozen=True)
class _Sides:
    """Validated layers of both sides, with what is needed to label the result."""

    names_a: list[str]
    tensors_a: list[torch.Tensor]
    names_b: list[str]
    tensors_b: list[torch.Tensor]
    n: int
    self_compare: bool
    labeled: bool

    @classmethod
    def from_inputs(cls, feats_a, feats_b, kernel: str, unbiased: bool, sigma_frac: float = 1.0) -> _Sides:
        _check_kernel(kernel)
        check_sigma_frac(sigma_frac)
        names_a, tensors_a = _layer_list(feats_a, "feats_a")
        self_compare = feats_b is None
        names_b, tensors_b = (names_a, tensors_a) if self_compare else _layer_list(feats_b, "feats_b")
        n = _check_examples(tensors_a, names_a, tensors_b, names_b, unbiased)
        device = tensors_a[0].device
        tensors_b = [t.to(device) for t in tensors_b]
        labeled = isinstance(feats_a, Mapping) and (self_compare or isinstance(feats_b, Mapping))
        return cls(names_a, tensors_a, names_b, tensors_b, n, self_compare, labeled)

    def wrap(self, values: torch.Tensor) -> torch.Tensor | LabeledMatrix:
        if self.labeled:
            return LabeledMatrix(values, tuple(self.names_a), tuple(self.names_b))
        return values


def _check_count(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise CKAProbeError(f"{name} must be a positive integer, got {value!r}; pass e.g. 1000")


def _full_sample_grams(sides: _Sides, kernel: str, unbiased: bool, sigma_frac: float):
    """Centred Grams ``(L, n^2)`` of both sides and their norms (NaN, with one warning, for constant layers)."""
    side_b = None if sides.self_compare else (sides.tensors_b, sides.names_b)
    stack_a, stack_b = _stack_pair(
        (sides.tensors_a, sides.names_a), side_b, kernel, unbiased, sigma_frac, torch.float64, warn=True
    )
    n = sides.n
    grams_a = stack_a.full().reshape(-1, n * n)
    grams_b = grams_a if sides.self_compare else stack_b.full().reshape(-1, n * n)
    return grams_a, grams_b, stack_a.norms, stack_b.norms


# --------------------------------------------------------------------------- bootstrap internals


class _ResampledLayers:
    """One side's layers, ready to give their kernels on weighted resamples.

    Linear kernel: the full-sample centred (biased) or U-centred (unbiased) Grams serve every
    resample, since both weighted statistics ignore row and column offsets ``a 1^T + 1 a^T``.
    RBF kernel: the squared distances, sorted once per layer, from which each resample's
    weighted median (its bandwidth) is read off a cumulative sum.
    """

    def __init__(self, tensors, grams: torch.Tensor, kernel: str, unbiased: bool, sigma_frac: float) -> None:
        n = tensors[0].shape[0]
        self.n = n
        self.unbiased = unbiased
        self.sigma_frac = sigma_frac
        # Rows with identical features get one id: a resample whose rows all share it is constant.
        # For a Gram, identical features are identical Gram rows.
        self.row_ids = torch.stack([torch.unique(_rows(t), dim=0, return_inverse=True)[1] for t in tensors])
        self.rbf = kernel == "rbf"
        if self.rbf:
            self.sq_dists = torch.stack([squared_distances(t) for t in tensors]).view(len(tensors), n * n)
            self.sorted_sq_dists, self.order = torch.sort(self.sq_dists, dim=1)
        else:
            self.grams = grams[None]
            self.squares = self.grams**2

    def constant(self, counts: torch.Tensor) -> torch.Tensor:
        """``(B, L)`` bool: the resample's rows of the layer are all identical."""
        drawn = (counts > 0)[:, None, :]
        ids = self.row_ids[None, :, :]
        largest = torch.where(drawn, ids, -1).amax(dim=2)
        smallest = torch.where(drawn, ids, self.n).amin(dim=2)
        return largest == smallest

    def kernels(self, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Kernels ``(B or 1, L, n^2)`` of the resamples (hollow for the unbiased estimator),
        and a ``(B, L)`` mask of undefined bandwidths."""
        if not self.rbf:
            return self.grams, torch.zeros(counts.shape[0], self.grams.shape[1], dtype=torch.bool, device=counts.device)
        num_layers, num_pairs = self.sq_dists.shape
        pair_counts = (counts[:, :, None] * counts[:, None, :]).view(len(counts), 1, num_pairs)
        cumulative = (
            pair_counts.expand(-1, num_layers, -1).gather(2, self.order.expand(len(counts), -1, -1)).cumsum(dim=2)
        )
        # NumPy's median of the resample's n^2 squared distances: the mean of order statistics
        # (N+1)//2 and N//2+1 (1-based; equal when N is odd), read off the weighted cumulative sum.
        ranks = torch.tensor([(num_pairs + 1) // 2, num_pairs // 2 + 1], device=counts.device)
        positions = torch.searchsorted(cumulative, ranks.expand(len(counts), num_layers, 2).contiguous())
        median = self.sorted_sq_dists.expand(len(counts), -1, -1).gather(2, positions).mean(dim=2)
        undefined = ~(median > 0)
        median = torch.where(undefined, torch.ones_like(median), median)
        kernels = (self.sq_dists[None] * (-0.5 / (self.sigma_frac**2 * median))[:, :, None]).exp_()
        # Both statistics ignore a constant shift of the off-diagonal entries; removing the mean
        # keeps the closed forms below from cancelling large terms.
        kernels.sub_(kernels.mean(dim=2, keepdim=True))
        if self.unbiased:
            kernels.view(len(counts), num_layers, self.n, self.n).diagonal(dim1=2, dim2=3).zero_()
        return kernels, undefined


def _rows(layer: torch.Tensor | Gram) -> torch.Tensor:
    """What identifies an example's features: its feature row, or its row of the (symmetrised) Gram."""
    return symmetric_gram(layer.matrix) if isinstance(layer, Gram) else layer.to(torch.float64)


def _resample_cka(layers_a: _ResampledLayers, layers_b: _ResampledLayers, counts: torch.Tensor, unbiased: bool):
    """CKA of every cell on a chunk of resamples given by their multiplicities ``counts`` (B, n).

    Both HSIC estimators of a resample are bilinear forms in the kernels::

        N(K, L) = <E o K, L> + alpha S_K S_L + sum_i w_i [beta_i k_i l_i + gamma (k_i l'_i + k'_i l_i)]

    with ``k = K w``, ``k' = K w^2``, ``S_K = w^T K w`` (likewise for ``L``), ``W = sum w = n``,
    ``Q = sum w^2`` and a weight matrix of rank at most 3::

        E = a w w^T + b (w^2 w^T + w (w^2)^T) + c w^2 (w^2)^T

    Biased estimator (``tr(K_idx H L_idx H)``, i.e. ``(n-1)^2 HSIC_0`` of the resample): ``a = 1``,
    ``b = c = 0``, ``alpha = 1/W^2``, ``beta = -2/W``, ``gamma = 0``. Unbiased estimator (the
    order-4 U-statistic of Song et al. 2012 over distinct examples, without its normalisation;
    ``K``, ``L`` hollow): ``a = W^2 - Q``, ``b = -W``, ``c = 2``, ``alpha = 1``,
    ``beta_i = -2 (W + w_i)``, ``gamma = 2``; this is the sum of
    ``w_i w_j w_q w_r (K_ij L_ij + K_ij L_qr - 2 K_ij L_iq)`` over distinct ``i, j, q, r``, by
    inclusion-exclusion, and equals ``(n-1)(n-2) <U(K), U(L)>`` when ``w = 1``.

    Returns:
        ``(B, L_a, L_b)`` CKA (NaN where undefined) and the ``(B, L_a)``, ``(B, L_b)`` masks of
        layers undefined on each resample.
    """
    w = counts.to(torch.float64)
    num_resamples, n = w.shape
    total = float(n)
    sq = w * w
    if unbiased:
        a = (total**2 - sq.sum(dim=1))[:, None, None]
        b, c, alpha, gamma = -total, 2.0, 1.0, 2.0
        beta = -2.0 * (total + w)[:, None, :]
    else:
        a, b, c, alpha, gamma = 1.0, 0.0, 0.0, 1.0 / total**2, 0.0
        beta = -2.0 / total
    weights = a * w[:, :, None] * w[:, None, :]
    if unbiased:
        mixed = sq[:, :, None] * w[:, None, :]
        weights = weights + b * (mixed + mixed.transpose(1, 2)) + c * sq[:, :, None] * sq[:, None, :]
    weights = weights.view(num_resamples, 1, n * n)

    def quadratic(m_w: torch.Tensor, m_sq: torch.Tensor | None) -> torch.Tensor:
        """``sum_ij E_ij M_ij`` from ``M w`` and ``M w^2``: ``(B, L)``."""
        total_form = a.view(-1, 1) if unbiased else a
        value = total_form * (m_w * w[:, None, :]).sum(dim=2)
        if unbiased:
            value = value + 2.0 * b * (m_w * sq[:, None, :]).sum(dim=2) + c * (m_sq * sq[:, None, :]).sum(dim=2)
        return value

    def pieces(layers: _ResampledLayers):
        kernels, undefined = layers.kernels(counts)
        kw = _times_weights(kernels, w, n)  # (B, L, n)
        ksq = _times_weights(kernels, sq, n) if unbiased else None
        sums = (kw * w[:, None, :]).sum(dim=2)
        weighted = weights * kernels  # E o K: (B, L, n^2)
        if not layers.rbf:  # kernels shared by all resamples: <E o K, K> from (K o K) w, without another pass
            squares = layers.squares
            self_term = quadratic(_times_weights(squares, w, n), _times_weights(squares, sq, n) if unbiased else None)
        else:
            self_term = (weighted * kernels).sum(dim=2)
        self_term = self_term + alpha * sums**2 + (w[:, None, :] * beta * kw * kw).sum(dim=2)
        if unbiased:
            self_term = self_term + 2.0 * gamma * (w[:, None, :] * kw * ksq).sum(dim=2)
        undefined = undefined | layers.constant(counts)
        return kernels, weighted, kw, ksq, sums, self_term, undefined

    kern_a, weighted_a, kw_a, ksq_a, sums_a, self_a, bad_a = pieces(layers_a)
    if layers_b is layers_a:
        kern_b, kw_b, ksq_b, sums_b, self_b, bad_b = kern_a, kw_a, ksq_a, sums_a, self_a, bad_a
    else:
        kern_b, _, kw_b, ksq_b, sums_b, self_b, bad_b = pieces(layers_b)

    if kern_b.shape[0] == 1:  # kernels shared by all resamples: one large matrix product
        cross = (weighted_a.reshape(-1, n * n) @ kern_b[0].T).view(num_resamples, -1, kern_b.shape[1])
    else:
        cross = weighted_a @ kern_b.transpose(1, 2)
    cross = (
        cross + alpha * sums_a[:, :, None] * sums_b[:, None, :] + (w[:, None, :] * beta * kw_a) @ kw_b.transpose(1, 2)
    )
    if unbiased:
        weighted_kw_a = gamma * w[:, None, :] * kw_a
        cross = cross + weighted_kw_a @ ksq_b.transpose(1, 2) + (gamma * w[:, None, :] * ksq_a) @ kw_b.transpose(1, 2)
    cka = cross / torch.sqrt(self_a[:, :, None] * self_b[:, None, :])
    cka[bad_a[:, :, None].expand_as(cka) | bad_b[:, None, :].expand_as(cka)] = float("nan")
    return cka, bad_a.expand(num_resamples, -1), bad_b.expand(num_resamples, -1)


def _times_weights(kernels: torch.Tensor, w: torch.Tensor, n: int) -> torch.Tensor:
    """``K w`` for kernels ``(B or 1, L, n^2)`` and weights ``(B, n)``: ``(B, L, n)``."""
    num_layers = kernels.shape[1]
    if kernels.shape[0] == 1:  # shared kernels: one matrix product, no broadcast copies
        return (kernels[0].reshape(num_layers * n, n) @ w.T).view(num_layers, n, -1).permute(2, 0, 1)
    return (kernels.view(-1, num_layers, n, n) @ w[:, None, :, None]).squeeze(-1)


def _percentile(replicates: torch.Tensor, q: float) -> torch.Tensor:
    """Quantile ``q`` over the first dimension with NumPy's default linear interpolation."""
    ordered = torch.sort(replicates, dim=0).values
    position = q * (replicates.shape[0] - 1)
    below = int(position)
    above = min(below + 1, replicates.shape[0] - 1)
    fraction = position - below
    return ordered[below] + fraction * (ordered[above] - ordered[below])


def _warn_undefined(
    sides: _Sides, undefined_a, undefined_b, too_few_distinct: int, num_resamples: int, nan_cells
) -> None:
    if too_few_distinct:
        warnings.warn(
            f"{too_few_distinct} of {num_resamples} resamples hold fewer than 4 distinct examples, where the "
            "unbiased estimator is undefined; their intervals are NaN (use more examples)",
            ZeroVarianceWarning,
            stacklevel=3,
        )
    # Layers constant on the full sample were already named by the full-sample check.
    counts = {}
    sides_info = (
        (sides.names_a, undefined_a, nan_cells.all(dim=1)),
        (sides.names_b, undefined_b, nan_cells.all(dim=0)),
    )
    for names, undefined, full_nan in sides_info:
        for name, count, known in zip(names, undefined.tolist(), full_nan.tolist()):
            if count and not known:
                counts[name] = max(count, counts.get(name, 0))
    if counts:
        listed = ", ".join(f"{name} ({count} of {num_resamples})" for name, count in counts.items())
        warnings.warn(
            f"layer(s) {listed} are constant on some bootstrap resamples, where their CKA is undefined; "
            "their intervals are NaN (their CKA rests on a few examples: use more images or leave them out)",
            ZeroVarianceWarning,
            stacklevel=3,
        )
