"""The all-pairs CKA engine: every layer of one model against every layer of another in one pass.

Each layer's centred kernel is formed once (on the CPU by BLAS's symmetric rank-k update, layer by
layer on several threads; on CUDA by batched products), packed as its upper triangle, and all pairs
come from one matrix product of the stacks (:func:`cka_matrix`, :func:`centered_grams`). The pairwise
estimators of :mod:`~cka_probe.math.estimators` are this engine on one pair of layers.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import ShapeError
from .checks import (
    Layer,
    _check_examples,
    _check_finite,
    _check_kernel,
    _layer_list,
    _resolve_dtype,
    _warn_constant,
    _warn_degenerate,
    constant_layers,
)
from .kernels import (
    FLOAT32_BLOCK,
    Gram,
    center_features_,
    center_gram,
    check_sigma_frac,
    full_precision_matmul,
    identical_rows,
    mean_left_matters,
    numpy_gram_,
    one_blas_thread,
    rbf_from_squared_distances,
    squared_distances_from_gram,
    symmetric_gram,
    upper_gram_,
)

__all__ = ["LabeledMatrix", "centered_grams", "cka_matrix"]

# cka_matrix packs the centred Grams' upper triangles when L_a L_b exceeds this times the layers to pack.
_PACK_RATIO = 64

# Batched Gram formation stacks layers of one width in chunks of at most this many bytes (CPU, CUDA).
_CHUNK_BYTES = (8 << 20, 256 << 20)

# Form the Grams of equal-width layers with batched products on the CPU too (as on CUDA); tests flip it.
_BATCHED_GRAMS = False

# At most this many Python threads share the CPU Grams. Each layer carries a fixed cost, its bookkeeping, part of
# it with the GIL held, of the order of a narrow layer's whole Gram (benchmarks/README.md, bench_gram_kernels.py):
# more threads than about five would queue for the GIL. Each also holds a buffer of the widest layer.
_MAX_GRAM_THREADS = 8


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


def centered_grams(
    features: Sequence[torch.Tensor | Gram],
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
    *,
    dtype: torch.dtype | str = torch.float64,
) -> torch.Tensor:
    """Stack the centred Gram matrices of several layers, flattened: ``(L, n*n)``.

    The biased estimator centres with ``H K H``, the unbiased one U-centres. Each row's squared
    norm is ``n``-scaled HSIC(K, K), and the product of two rows the scaled HSIC(K, L), so the
    CKA of all layer pairs is one matrix product of these stacks. The Grams are formed as in
    :func:`cka_matrix` (BLAS's symmetric rank-k update on the CPU, batched products on CUDA).

    Args:
        features: ``(n, d_i)`` tensors or :class:`Gram` of the same n.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: U-centre instead of double-centre.
        sigma_frac: RBF bandwidth fraction.
        dtype: ``torch.float64`` (default) or ``torch.float32`` (also ``"float64"``/``"float32"``):
            the precision of the returned stack (see :func:`cka_matrix` for how float32 is computed).
    """
    _check_kernel(kernel)
    names, layers = _layer_list(list(features), "features")
    _check_examples(layers, names, [], [], unbiased)
    (stack,) = _centered_stacks([(layers, names)], kernel, unbiased, sigma_frac, _resolve_dtype(dtype))
    return stack.full().reshape(len(layers), -1)


def cka_matrix(
    feats_a: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram],
    feats_b: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram] | None = None,
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
    *,
    dtype: torch.dtype | str = torch.float64,
) -> torch.Tensor | LabeledMatrix:
    """CKA of every layer of ``feats_a`` against every layer of ``feats_b``, vectorized.

    Each layer's centred Gram ``K_c = X_c X_c^T`` (features centred first; a :class:`Gram` is
    double-centred) is formed over its upper triangle only, and all pairs come from one matrix
    product of the stacked strict upper triangles::

        <A, B>_F = 2 sum_{i<j} A_ij B_ij + sum_i A_ii B_ii

    For the unbiased estimator the U-centring is not carried out: Song et al.'s closed form on
    ``K_c`` (whose rows sum to 0) gives ``<U(K), U(L)>_F`` from the same product plus terms in the
    diagonals (see :class:`_Stack`). ``CKA_ij = <C(K_i), C(L_j)> / (||C(K_i)|| ||C(L_j)||)``, equal to
    :func:`linear_cka` / :func:`rbf_cka` on each pair. The upper triangles are gathered, halving the
    product's work, on the CPU (linear features) and wherever many layers are compared.

    On the CPU the linear Grams come from BLAS's symmetric rank-k update, layer by layer, on as many
    threads as torch uses (up to 8); on CUDA, from batched products of equal-width layers.

    Precision: with ``dtype=torch.float64`` (default) everything is float64. With
    ``dtype=torch.float32`` the features are centred in float32, a second time where the mean is large
    against the spread (so that rounding leaves no mean that matters; float64 features are centred in
    float64 first), the Grams formed and multiplied in float32, the products summed in float32 over
    blocks of 4096 terms and the blocks in float64, and the diagonal terms and norms accumulated in
    float64; the error against float64 is about 2e-8 in benchmarks/bench_cka_matrix.py. The products
    run at full float32 precision even where TF32 is enabled
    (``torch.set_float32_matmul_precision("highest")`` for the call, restored after it). The same code
    runs on CUDA tensors.

    Args:
        feats_a: ``(n, d_i)`` tensors or :class:`Gram`, as a sequence or a name -> layer mapping.
        feats_b: the same for the second model; ``None`` (or ``feats_a`` itself) compares ``feats_a`` with
            itself, whose diagonal is then 1 to float64 rounding in either precision.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: use the unbiased HSIC estimator (Song et al. 2012).
        sigma_frac: RBF bandwidth fraction of the median distance.
        dtype: ``torch.float64`` or ``torch.float32`` (or ``"float64"`` / ``"float32"``).

    Returns:
        ``(L_a, L_b)`` float64 tensor, or a :class:`LabeledMatrix` carrying the names when both
        inputs are mappings. Rows or columns of constant layers are NaN (with one warning).

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> feats = {"conv1": torch.randn(32, 8, generator=g), "conv2": torch.randn(32, 4, generator=g)}
        >>> m = cka_matrix(feats)
        >>> m.rows, [round(float(v), 6) for v in m.values.diagonal()]
        (('conv1', 'conv2'), [1.0, 1.0])
    """
    _check_kernel(kernel)
    check_sigma_frac(sigma_frac)
    precision = _resolve_dtype(dtype)
    names_a, layers_a = _layer_list(feats_a, "feats_a")
    self_compare = feats_b is None or feats_b is feats_a
    names_b, layers_b = (names_a, layers_a) if self_compare else _layer_list(feats_b, "feats_b")
    _check_examples(layers_a, names_a, layers_b, names_b, unbiased)
    device = layers_a[0].device
    layers_b = [t.to(device) for t in layers_b]

    # Gathering the strict upper triangles halves the all-pairs product at the cost of one copy of each
    # stack: worth it when the product (L_a L_b) dominates the stacks (L_a + L_b), and always in the CPU
    # pass of linear features, which copies each triangle out of cache anyway (_cpu_grams).
    num_a, num_b = len(layers_a), (0 if self_compare else len(layers_b))
    pack = _cpu_pass(kernel, device) or len(layers_a) * len(layers_b) > _PACK_RATIO * (num_a + num_b)
    with full_precision_matmul():
        side_b = None if self_compare else (layers_b, names_b)
        stack_a, stack_b = _stack_pair(
            (layers_a, names_a), side_b, kernel, unbiased, sigma_frac, precision, pack, warn=True
        )
        values = stack_a.products(stack_b)
        if self_compare:  # symmetric, and norms from the product's own diagonal: self-similarity 1 to float64
            values = (values + values.T) / 2  # rounding, in float32 too (a float32 product is not symmetric)
            norms_a = norms_b = torch.where(stack_a.undefined, torch.nan, values.diagonal().clamp_min(0).sqrt())
        else:
            norms_a, norms_b = stack_a.norms, stack_b.norms
        values = values / (norms_a[:, None] * norms_b[None, :])
    if isinstance(feats_a, Mapping) and (self_compare or isinstance(feats_b, Mapping)):
        return LabeledMatrix(values, tuple(names_a), tuple(names_b))
    return values


# --------------------------------------------------------------------------- internals


@dataclass(frozen=True)
class _Stack:
    """The centred kernels ``K_c = H K H`` of a list of layers, packed, and what the estimators need.

    ``K_c`` is symmetric, so it is held as its strict upper triangle ``packed`` and its ``diag``. Both
    estimators' inner products follow from these (``<A, B>_F = 2 sum_{i<j} A_ij B_ij + sum_i A_ii B_ii``),
    the unbiased one through Song et al.'s closed form (2012, eq. 5) applied to ``K_c``, whose rows sum
    to 0: with ``K~`` the hollow ``K_c``, ``1^T K~ 1 = -tr K_c`` and ``K~ 1 = -diag K_c``, so::

        <U(K), U(L)>_F = 2 <P_K, P_L> + tr(K_c) tr(L_c) / ((n-1)(n-2)) - 2 <diag K_c, diag L_c> / (n-2)

    (``U(K) = U(H K H)``: U-centring ignores the symmetric offsets that ``H . H`` removes). Centred first,
    the terms do not cancel catastrophically, as they do on uncentred Grams.

    Attributes:
        packed: ``(L, n (n-1) / 2)`` strict upper triangles, or ``(L, n^2)`` matrices that hold them with
            zeros elsewhere; float64 or float32.
        diag: ``(L, n)`` float64 diagonals.
        unbiased: whose inner product :meth:`products` gives.
        squared_norms: ``(L,)`` float64 ``||C(K)||_F^2`` (``C`` = ``H . H`` or ``U``).
        norms: ``(L,)`` float64 ``||C(K)||_F``; NaN for undefined layers.
        variance: ``(L,)`` float64 ``V = ||X_c||_F^2`` of each layer's features.
        scale: ``(L,)`` float64 ``S = ||X||_F^2``.
        constant: ``(L,)`` bool: the layer is constant (:func:`constant_layers`).
        undefined: ``(L,)`` bool: constant, or its centred kernel vanishes or is not finite (an
            RBF bandwidth of 0 when more than half of the example pairs coincide).
    """

    packed: torch.Tensor
    diag: torch.Tensor
    unbiased: bool
    squared_norms: torch.Tensor
    norms: torch.Tensor
    variance: torch.Tensor
    scale: torch.Tensor
    constant: torch.Tensor
    undefined: torch.Tensor

    @property
    def n(self) -> int:
        return self.diag.shape[1]

    def products(self, other: _Stack) -> torch.Tensor:
        """``<C(K_i), C(L_j)>_F`` for every layer pair, ``(L_a, L_b)`` float64."""
        n = self.n
        cross = 2.0 * _accumulated_products(self.packed, other.packed)
        diagonal = self.diag @ other.diag.T
        if not self.unbiased:
            return cross + diagonal
        traces = self.diag.sum(dim=1)[:, None] * other.diag.sum(dim=1)[None, :]
        return cross + traces / ((n - 1) * (n - 2)) - 2.0 * diagonal / (n - 2)

    def full(self) -> torch.Tensor:
        """The ``(L, n, n)`` centred (biased) or U-centred (unbiased) kernels, in the packed dtype."""
        num_layers, n = self.diag.shape
        if self.packed.shape[1] == n * n:
            grams = self.packed.view(num_layers, n, n).clone()
        else:
            grams = torch.zeros(num_layers, n * n, dtype=self.packed.dtype, device=self.packed.device)
            grams[:, _upper_index(n, grams.device)] = self.packed
            grams = grams.view(num_layers, n, n)
        grams += grams.transpose(1, 2).clone()
        grams.diagonal(dim1=1, dim2=2).copy_(self.diag)
        if self.unbiased:
            _u_center_(grams)
        return grams


def _centered_stacks(
    sides: Sequence[tuple[Sequence[Layer], Sequence[str]]],
    kernel: str,
    unbiased: bool,
    sigma_frac: float,
    dtype: torch.dtype,
    pack: bool = True,
) -> list[_Stack]:
    """Centred kernels of every layer of each side (a list of layers and their names), one :class:`_Stack` each.

    Linear kernel on features: each layer is centred (in its precision; float32 twice where needed) and the upper
    triangle of its Gram ``X_c X_c^T`` formed. ``V = tr(X_c X_c^T)`` and ``S = V + n ||mean||^2`` come for
    free. On the CPU, layer by layer on NumPy views and BLAS's symmetric rank-k update, on as many threads as
    torch uses, the layers of all sides in one pass, each Gram going straight into its packed row
    (:func:`_cpu_grams`: no ``(L, n, n)`` stack is held); on CUDA, layers of equal width are stacked in chunks
    and share batched products (:func:`~cka_probe.math.kernels.upper_gram_`). Gram inputs are symmetrised
    and double-centred in one batch; the RBF kernel is built from exact squared distances.
    """
    parts, jobs = [], []
    for layers, names in sides:
        num_layers, n, device = len(layers), layers[0].shape[0], layers[0].device
        packed = torch.empty(num_layers, n * (n - 1) // 2 if pack else n * n, dtype=dtype, device=device)
        diag = torch.empty(num_layers, n, dtype=torch.float64, device=device)
        mean_squares = torch.empty(num_layers, dtype=torch.float64, device=device)
        done = []
        if pack and _cpu_pass(kernel, device):
            done = [i for i, layer in enumerate(layers) if not isinstance(layer, Gram)]
        if done:
            jobs.append((layers, done, packed, diag, mean_squares))
        parts.append((layers, names, packed, diag, mean_squares, done))
    if jobs:  # the layers of all sides in one pass: torch ops between them would hold a core (see _cpu_grams)
        _cpu_grams(jobs)
    return [_side_stack(*part, kernel, unbiased, sigma_frac, pack) for part in parts]


def _stack_pair(
    side_a: tuple[Sequence[Layer], Sequence[str]],
    side_b: tuple[Sequence[Layer], Sequence[str]] | None,
    kernel: str,
    unbiased: bool,
    sigma_frac: float,
    dtype: torch.dtype,
    pack: bool = True,
    *,
    warn: bool = False,
) -> tuple[_Stack, _Stack]:
    """:func:`_centered_stacks` of two sides, ``(stack_a, stack_b)``; ``side_b=None`` compares side a with itself
    (one stack, returned twice). ``warn``: one warning naming the layers without a defined CKA."""
    sides = [side_a] + ([] if side_b is None else [side_b])
    stacks = _centered_stacks(sides, kernel, unbiased, sigma_frac, dtype, pack)
    if warn:
        _warn_undefined([(stack, names) for stack, (_, names) in zip(stacks, sides)])
    return stacks[0], stacks[-1]


def _cpu_pass(kernel: str, device: torch.device) -> bool:
    """Whether the linear Grams of features are formed by :func:`_cpu_grams` (which writes packed triangles)."""
    return kernel == "linear" and device.type == "cpu" and not _BATCHED_GRAMS


def _side_stack(
    layers: Sequence[Layer],
    names: Sequence[str],
    packed: torch.Tensor,
    diag: torch.Tensor,
    mean_squares: torch.Tensor,
    done: Sequence[int],
    kernel: str,
    unbiased: bool,
    sigma_frac: float,
    pack: bool,
) -> _Stack:
    """One side of :func:`_centered_stacks`. ``packed`` (the strict upper triangles, or the ``n^2`` matrices
    holding them with zeros elsewhere), ``diag`` and ``mean_squares`` are allocated, and filled already for
    the layers in ``done``; the other layers' kernels are formed here as an ``(g, n, n)`` stack."""
    num_layers, n = len(layers), layers[0].shape[0]
    device = layers[0].device
    dtype = packed.dtype
    linear = kernel == "linear"
    work = dtype if linear else torch.float64
    finished = set(done)
    features = [i for i, layer in enumerate(layers) if not isinstance(layer, Gram)]
    feature_index = [i for i in features if i not in finished]
    gram_index = [i for i, layer in enumerate(layers) if isinstance(layer, Gram)]
    rest = sorted(feature_index + gram_index)
    slot = {i: k for k, i in enumerate(rest)}  # position in the stack formed here
    grams = torch.empty(len(rest), n, n, dtype=work, device=device)
    variance = torch.empty(num_layers, dtype=torch.float64, device=device)

    if feature_index and linear:
        groups: dict[tuple[int, torch.dtype], list[int]] = {}
        for i in feature_index:
            groups.setdefault((layers[i].shape[1], layers[i].dtype), []).append(i)
        budget = _CHUNK_BYTES[device.type == "cuda"]
        for (width, dtype_in), members in groups.items():
            # chunks of at most `budget` bytes, in buffers reused from chunk to chunk (fresh memory is slow to fill)
            size = max(1, budget // (n * width * grams.element_size()))
            stacked = torch.empty(min(size, len(members)), n, width, dtype=dtype_in, device=device)
            upper = torch.empty(min(size, len(members)), n, n, dtype=work, device=device)
            for start in range(0, len(members), size):
                chunk = members[start : start + size]
                index = torch.tensor(chunk, device=device)
                x = torch.stack([layers[i].detach().to(device) for i in chunk], out=stacked[: len(chunk)])
                if x.dtype not in (work, torch.float64):  # narrower features: widened exactly first
                    x = x.to(work)
                mean_squares[index] = center_features_(x) * n  # float64 features: centred, then rounded to work
                centred = x if x.dtype == work else x.to(work)
                upper_gram_(centred, upper[: len(chunk)])
                grams.index_copy_(0, torch.tensor([slot[i] for i in chunk], device=device), upper[: len(chunk)])
    elif feature_index:  # the RBF kernel, in float64
        for i in feature_index:
            x = layers[i].detach().to(device)
            mean = x.mean(dim=0, dtype=torch.float64)
            mean_squares[i] = mean.square().sum() * n
            centred = x.to(torch.float64) - mean
            gram = symmetric_gram(centred @ centred.T)
            variance[i] = gram.diagonal().sum()
            grams[slot[i]] = rbf_from_squared_distances(squared_distances_from_gram(gram, _same_rows(x)), sigma_frac)

    if gram_index:
        index = torch.tensor(gram_index, device=device)
        raw = symmetric_gram(torch.stack([layers[i].matrix.to(device) for i in gram_index]))
        _check_finite(torch.isfinite(raw).all(dim=(1, 2)), gram_index, names, "Gram matrix")
        sq_dist = squared_distances_from_gram(raw, identical_rows(raw))
        variance[index] = sq_dist.sum(dim=(1, 2)) / (2 * n)
        mean_squares[index] = raw.diagonal(dim1=1, dim2=2).sum(dim=1) - variance[index]  # so that S = tr(K)
        kernels = rbf_from_squared_distances(sq_dist, sigma_frac) if not linear else center_gram(raw)
        grams.index_copy_(0, torch.tensor([slot[i] for i in gram_index], device=device), kernels.to(work))

    if rest:  # only the upper triangles of linear feature Grams were formed: they are all that is read
        if not linear:
            grams = center_gram(grams)
        index = torch.tensor(rest, device=device)
        diag[index] = grams.diagonal(dim1=1, dim2=2).to(torch.float64)
        if pack:
            rows = grams.view(len(rest), n * n).index_select(1, _upper_index(n, device))
        else:  # the strict upper triangle in place, zeros elsewhere: no copy, twice the product's work
            rows = grams.triu_(1).view(len(rest), n * n)
        packed[index] = rows.to(dtype)
    if linear and features:
        variance[features] = diag[features].sum(dim=1)

    scale = variance + mean_squares
    _check_finite(torch.isfinite(scale), range(num_layers), names, "features")
    squared = 2.0 * torch.linalg.vector_norm(packed, dim=1).to(torch.float64) ** 2
    if unbiased:
        squared = squared + diag.sum(dim=1) ** 2 / ((n - 1) * (n - 2)) - 2.0 * diag.square().sum(dim=1) / (n - 2)
    else:
        squared = squared + diag.square().sum(dim=1)
    constant = constant_layers(variance, scale)
    undefined = constant | ~torch.isfinite(squared) | ~(squared > 0)
    norms = torch.where(undefined, torch.nan, squared.clamp_min(0).sqrt())
    return _Stack(packed, diag, unbiased, squared, norms, variance, scale, constant, undefined)


def _cpu_grams(jobs: Sequence[tuple[Sequence[Layer], Sequence[int], torch.Tensor, torch.Tensor, torch.Tensor]]) -> None:
    """Linear Grams on the CPU, layer by layer. Each job is ``(layers, feature_index, packed, diag,
    mean_squares)``: for every ``i`` in ``feature_index``, ``packed[i]`` gets the strict upper triangle of the
    centred Gram (row by row), ``diag[i]`` its diagonal and ``mean_squares[i]`` ``n ||mean_i||^2``.

    Each layer is centred into a reused buffer, its Gram formed by BLAS's symmetric rank-k update into a
    reused ``(n, n)`` buffer, and the triangle copied out while it is in cache, all on NumPy views of the
    tensors' memory (a NumPy call costs a fraction of a torch call), with the BLAS held to one thread.
    With ``torch.get_num_threads()`` above 1, as many Python threads (this one included; at most
    ``_MAX_GRAM_THREADS``) take the layers, widest first, one at a time from a shared queue: the GIL is
    released in the BLAS calls (:func:`~cka_probe.math.kernels.numpy_gram_`) and NumPy's ufuncs, so they run
    in parallel. (Measured in benchmarks/bench_cka_matrix.py: faster than torch's batched products
    on the same threads.) Taking layers from a queue rather than in fixed shares keeps the stage near one
    thread's time while a core is still busy: torch's OpenMP workers spin for some milliseconds after a
    parallel op, which is also why the layers of all sides go in one call. The centring is that of
    :func:`~cka_probe.math.kernels.center_features_`, in NumPy so that the threads make no torch calls, except
    that float32's second pass is made only where :func:`~cka_probe.math.kernels.mean_left_matters` says so
    after the first (constant layers among them, so that the constant-layer test sees them): the ``X_c X_c^T`` of
    the first pass is kept otherwise. Float64 features in float32 work are
    centred in float64, then rounded; narrower ones are widened first.
    """
    work_dtype = jobs[0][2].dtype  # one work dtype for all
    views = {}  # NumPy views, made here: torch calls in the threads would pass the GIL to and fro
    for number, (layers, feature_index, _, _, _) in enumerate(jobs):
        for i in feature_index:
            x = layers[i].detach()
            views[number, i] = x.numpy() if x.dtype in (work_dtype, torch.float64) else None  # narrower: later
    outputs = [(job[2].numpy(), job[3].numpy()) for job in jobs]
    largest = max(layers[i].numel() for layers, feature_index, *_ in jobs for i in feature_index)
    n = jobs[0][3].shape[1]  # one n for all
    upper = np.triu_indices(n, 1)
    upper_flat = upper[0] * n + upper[1]
    averaging = {dtype: np.full((1, n), 1.0 / n, dtype=dtype) for dtype in (np.float32, np.float64)}
    means: dict[tuple[int, int], np.ndarray] = {}
    queue = iter(sorted(views, key=lambda key: -jobs[key[0]][0][key[1]].shape[1]))
    lock = threading.Lock()
    failures: list[BaseException] = []

    def take() -> tuple[int, int] | None:
        with lock:
            return None if failures else next(queue, None)

    def run() -> None:
        store = np.empty(largest, dtype=outputs[0][0].dtype)
        gram = np.empty((n, n), dtype=outputs[0][0].dtype)
        try:
            # non-finite values are reported by layer afterwards (_check_finite)
            with np.errstate(all="ignore"):
                while (key := take()) is not None:
                    number, i = key
                    packed, diag = outputs[number]
                    x = views[key]
                    if x is None:  # narrower features: widened exactly
                        x = jobs[number][0][i].detach().to(work_dtype).numpy()
                    centred = store[: x.size].reshape(x.shape)
                    first = averaging[x.dtype.type] @ x
                    means[key] = first
                    np.subtract(x, first, centred, casting="same_kind")  # float64 to float32: centred, then rounded
                    numpy_gram_(centred, gram)
                    if centred.dtype == np.float32:  # second pass where the mean is large against the spread
                        offset = n * float(np.dot(first.ravel(), first.ravel()))
                        if mean_left_matters(offset, float(np.trace(gram, dtype=np.float64))):
                            centred -= averaging[np.float32] @ centred
                            numpy_gram_(centred, gram)
                    diag[i] = np.diagonal(gram)
                    np.take(gram, upper_flat, out=packed[i], mode="clip")  # "raise" buffers out first: slower
        except BaseException as error:  # re-raised in the calling thread
            failures.append(error)

    threads = min(torch.get_num_threads(), _MAX_GRAM_THREADS, len(views))
    helpers = [threading.Thread(target=run, daemon=True) for _ in range(threads - 1)]
    with one_blas_thread():
        for helper in helpers:
            helper.start()
        run()
        for helper in helpers:
            helper.join()
    if failures:
        raise failures[0]
    for number, (layers, feature_index, _, _, mean_squares) in enumerate(jobs):
        squares = np.concatenate([means[number, i].ravel() for i in feature_index]).astype(np.float64) ** 2
        starts = np.cumsum([0] + [layers[i].shape[1] for i in feature_index[:-1]])
        mean_squares[feature_index] = torch.from_numpy(np.add.reduceat(squares, starts)) * n


def _upper_index(n: int, device: torch.device) -> torch.Tensor:
    """Flat indices ``i * n + j`` of the strict upper triangle ``i < j`` of an ``(n, n)`` matrix, row by row."""
    upper = torch.triu_indices(n, n, offset=1, device=device)
    return upper[0] * n + upper[1]


def _u_center_(grams: torch.Tensor) -> None:
    """In-place U-centring of a stack ``(L, n, n)`` (see :func:`~cka_probe.math.kernels.center_gram_unbiased`)."""
    n = grams.shape[-1]
    if n < 4:
        raise ShapeError(f"the unbiased estimator needs at least 4 examples, got n={n}; use more images")
    diagonal = grams.diagonal(dim1=-2, dim2=-1)
    diagonal.zero_()
    means = grams.sum(dim=-1) / (n - 2)
    means -= means.sum(dim=-1, keepdim=True) / (2 * (n - 1))
    grams.sub_(means[:, :, None]).sub_(means[:, None, :])
    diagonal.zero_()


def _same_rows(x: torch.Tensor) -> torch.Tensor:
    """``(n, n)`` mask of rows of ``x`` that are exactly equal."""
    ids = torch.unique(x, dim=0, return_inverse=True)[1]
    return ids[:, None] == ids[None, :]


def _accumulated_products(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b.T`` in float64; float32 inputs are multiplied in float32 blocks summed in float64."""
    if a.dtype == torch.float64:
        return a @ b.T
    total = torch.zeros(a.shape[0], b.shape[0], dtype=torch.float64, device=a.device)
    for start in range(0, a.shape[1], FLOAT32_BLOCK):
        block = slice(start, start + FLOAT32_BLOCK)
        total += a[:, block] @ b[:, block].T
    return total


def _pair_cka(x: Layer, y: Layer, kernel: str, unbiased: bool, sigma_frac: float) -> torch.Tensor:
    stack_x, stack_y = _centered_stacks([([x], ["x"]), ([y], ["y"])], kernel, unbiased, sigma_frac, torch.float64)
    if bool(stack_x.undefined[0] | stack_y.undefined[0]):
        _warn_undefined([(stack_x, ["x"]), (stack_y, ["y"])])
        return torch.tensor(float("nan"), dtype=torch.float64)
    return stack_x.products(stack_y)[0, 0] / (stack_x.norms[0] * stack_y.norms[0])


def _warn_undefined(stacks: Sequence[tuple[_Stack, Sequence[str]]]) -> None:
    """One warning naming every constant layer, one naming every other layer without a defined CKA."""
    constant, degenerate = [], []
    for stack, names in stacks:
        constant += [names[i] for i in torch.nonzero(stack.constant).flatten().tolist()]
        degenerate += [names[i] for i in torch.nonzero(stack.undefined & ~stack.constant).flatten().tolist()]
    _warn_constant(constant)
    _warn_degenerate(degenerate)
