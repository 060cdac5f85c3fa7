"""Gram matrices, squared distances and centring.

Every function here takes and returns float64 tensors on the input's device and works on a
single ``(n, n)`` matrix or a stack ``(..., n, n)``. Feature matrices are ``(n, d)``: one row
per example. A layer can also arrive as its linear Gram matrix ``K = X X^T`` (for flattened
activations, whose ``(n, C*H*W)`` features are never held), wrapped in :class:`Gram`; every
estimator accepts either form.

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

import ctypes
import functools
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import KernelError, ShapeError

__all__ = [
    "Gram",
    "center_features",
    "center_features_",
    "center_gram",
    "center_gram_unbiased",
    "full_precision_matmul",
    "gram_linear",
    "gram_rbf",
    "mean_left_matters",
    "numpy_gram_",
    "one_blas_thread",
    "squared_distances",
    "upper_gram_",
]


@dataclass(frozen=True)
class Gram:
    """One layer given as its ``(n, n)`` linear Gram matrix ``K = X X^T`` instead of its features.

    ``X`` is the layer's ``(n, d)`` feature matrix (for un-pooled activations, each example's
    activation flattened), which need not be held: every estimator needs only ``K``. The Gram may
    be of raw or of centred features (``X_c = X - 1 mean(X)^T``, i.e. ``H K H``): every estimator
    centres it again, which changes nothing for a centred one. Forming it from centred features
    is the more precise choice, since centring an uncentred Gram cancels ``||mean||^2``-sized terms.

    Constant layers: a Gram of centred features has lost the features' raw scale, so only rows
    that are exactly identical (equal Gram rows) make its layer count as constant.

    Attributes:
        matrix: ``(n, n)`` symmetric positive semi-definite tensor, any float dtype.

    Example:
        >>> import torch
        >>> x = torch.randn(16, 300, dtype=torch.float64)
        >>> gram = Gram(x @ x.T)
        >>> gram.n
        16
    """

    matrix: torch.Tensor

    def __post_init__(self) -> None:
        matrix = self.matrix
        if not isinstance(matrix, torch.Tensor) or matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1]:
            shape = tuple(matrix.shape) if isinstance(matrix, torch.Tensor) else type(matrix).__name__
            raise ShapeError(f"a Gram matrix must be a square (n, n) tensor, got {shape}; form it as X @ X.T")
        if not matrix.is_floating_point():
            object.__setattr__(self, "matrix", matrix.to(torch.float64))

    @property
    def n(self) -> int:
        """Number of examples."""
        return self.matrix.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n, self.n)

    @property
    def device(self) -> torch.device:
        return self.matrix.device

    def to(self, device) -> Gram:
        """The same Gram on another device."""
        return Gram(self.matrix.to(device))

    @classmethod
    def from_features(cls, x: torch.Tensor) -> Gram:
        """The float64 Gram ``X_c X_c^T`` of the centred features ``x`` ``(n, d)``."""
        xc = center_features(x)
        return cls(xc @ xc.T)


def center_features(x: torch.Tensor) -> torch.Tensor:
    """Subtract each feature's mean over the examples: ``x - 1 mean(x)^T`` in float64.

    Args:
        x: features, shape ``(..., n, d)``.

    Returns:
        The centred features, float64, same shape.
    """
    x = x.to(torch.float64)
    return x - x.mean(dim=-2, keepdim=True)


def center_features_(x: torch.Tensor) -> torch.Tensor:
    """Centre features ``(..., n, d)`` over the examples in place, in their own precision (float32 or float64).

    Float32 is centred twice: the second pass removes the mean that float32 rounding left of the first
    (about 1e-7 of it), so that a constant layer centres to ~1e-14 of its values. (The CPU pass of
    :func:`~cka_probe.math.cka_matrix` and the float32 Grams of flattened layers make the second pass only where
    the mean is large against the spread, which they learn from the Gram of the first: :func:`mean_left_matters`.)

    Returns:
        Each element's float64 ``||mean||^2`` (shape ``x.shape[:-2]``).
    """
    averaging = torch.full((1, x.shape[-2]), 1.0 / x.shape[-2], dtype=x.dtype, device=x.device)
    mean = averaging @ x
    x.sub_(mean)
    if x.dtype == torch.float32:
        x.sub_(averaging @ x)
    return mean.to(torch.float64).square().sum(dim=(-2, -1))


# float32 features are centred a second time when n ||mean||^2 > this times tr(X_c X_c^T) after the first pass.
# The first pass leaves a mean r of rounding, |r| ~ eps |mean|. Its terms in K_c are rank-2 (X_c r 1^T and its
# transpose); they vanish against a centred Gram in the biased estimator and enter the unbiased one's closed form
# through the diagonal at about |r| / |x_c| ~ eps sqrt(this): below the float32 Gram's own rounding. Constant
# layers (tr ~ 0) always get the second pass, which leaves them exactly constant.
SECOND_PASS_OFFSET = 3.0


def mean_left_matters(mean_squares: float, trace: float) -> bool:
    """Whether float32 features centred once need a second pass, from ``mean_squares = n ||mean||^2`` of the first
    pass and ``trace = tr(X_c X_c^T)`` after it: ``mean_squares > SECOND_PASS_OFFSET * trace``, or either is NaN.

    The one rule of the CPU pass of :func:`~cka_probe.math.cka_matrix` and of the float32 Grams of flattened
    layers (:func:`~cka_probe.capture.pooling.flattened_gram`)."""
    return not mean_squares <= SECOND_PASS_OFFSET * trace


def gram_linear(x: torch.Tensor | Gram) -> torch.Tensor:
    """Linear kernel ``K = X X^T``.

    Centring the features first leaves every centred Gram below unchanged (for ``center_gram``
    because ``H 1 = 0``; for ``center_gram_unbiased`` because U-centring removes symmetric row
    and column offsets), and it is better conditioned, so callers usually pass
    :func:`center_features` of their data.

    Args:
        x: features, shape ``(n, d)``, or a :class:`Gram` (returned as float64).

    Returns:
        ``(n, n)`` float64 Gram matrix.

    Example:
        >>> import torch
        >>> gram_linear(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
        tensor([[1., 0.],
                [0., 4.]], dtype=torch.float64)
    """
    if isinstance(x, Gram):
        return x.matrix.to(torch.float64)
    x = x.to(torch.float64)
    return x @ x.T


def upper_gram_(x: torch.Tensor, out: torch.Tensor, accumulate: bool = False) -> torch.Tensor:
    """Write ``x x^T`` into ``out`` (or add it), in ``x``'s precision, doing about half the work of a product.

    The upper triangle, diagonal included, is what is written; below the diagonal ``out`` may hold the
    mirror image or what it held before, so callers read the upper triangle only.

    * On the CPU with one torch thread (``torch.get_num_threads() == 1``, e.g. ``OMP_NUM_THREADS=1``), a
      2-D float32 or float64 ``x`` goes to BLAS's symmetric rank-k update on NumPy views (:func:`numpy_gram_`),
      with that BLAS held to one thread as well (its rate against ``torch.mm``: ``benchmarks/README.md``).
    * Otherwise (several threads, CUDA, stacks ``(g, n, d)``), block rows of ``torch.mm``/``torch.bmm``: row
      block ``k`` is ``x[rows_k] @ x[rows_k.start:]^T``, about ``(B + 1) / 2B`` of the full product for
      ``B`` blocks, on torch's threads. (Two thread pools, NumPy's BLAS and torch's OpenMP, running by
      turns wait on each other.)

    Args:
        x: ``(n, d)`` features, or a stack ``(g, n, d)``.
        out: ``(n, n)`` (or ``(g, n, n)``) tensor of ``x``'s dtype and device.
        accumulate: add ``x x^T`` to ``out`` instead of overwriting it.

    Returns:
        ``out``.
    """
    if x.device.type == "cpu" and x.ndim == 2 and x.dtype in _NUMPY_FLOATS and torch.get_num_threads() == 1:
        with one_blas_thread():
            numpy_gram_(x.detach().numpy(), out.detach().numpy(), accumulate)  # views: out is written in place
        return out
    n = x.shape[-2]
    step = max(64, n // 8)
    product = torch.mm if x.ndim == 2 else torch.bmm
    for start in range(0, n, step):
        stop = min(start + step, n)
        target = out[..., start:stop, start:]
        block = product(x[..., start:stop, :], x[..., start:, :].transpose(-2, -1))
        if accumulate:
            target += block
        else:
            target.copy_(block)
    return out


def numpy_gram_(x: np.ndarray, out: np.ndarray, accumulate: bool = False) -> np.ndarray:
    """The upper triangle (diagonal included) of ``out`` becomes ``x @ x.T`` (or has it added), for NumPy arrays,
    through BLAS's symmetric rank-k update ``?syrk``.

    ``?syrk`` is SciPy's (:mod:`scipy.linalg.cython_blas`), called through :mod:`ctypes`, which releases the
    GIL, so Python threads run it in parallel. Nothing is mirrored and no temporary is made: the
    C-contiguous ``(n, d)`` ``x`` is the column-major ``(d, n)`` matrix ``A = x^T``, and the C-contiguous
    ``out`` is the column-major ``out^T``, whose lower triangle is ``out``'s upper one, so ``?syrk("L", "T")``
    writes (``beta = 0``) or adds to (``beta = 1``) ``A^T A`` there in place; below the diagonal ``out``
    keeps what it held. NumPy's ``x @ x.T`` calls ``?syrk`` too, then mirrors the triangle (the time of each per
    call: ``benchmarks/README.md``).

    Arrays of other layouts or dtypes, overlapping ones, or all where SciPy's Cython BLAS cannot be reached,
    go through NumPy's ``x @ x.T``. The first call loads :mod:`scipy.linalg`, once per process,
    which a process drawing figures pays anyway (seaborn loads it).
    """
    n, k = x.shape
    syrk = _syrk(x.dtype.char, accumulate) if x.dtype == out.dtype and x.dtype in _SYRK_TYPES else None
    if (
        syrk is not None
        and x.flags.c_contiguous
        and out.flags.c_contiguous
        and out.flags.writeable
        and out.shape == (n, n)
        and 0 < min(n, k)
        and max(n, k) < 2**31
        and not np.may_share_memory(x, out)
    ):
        function, one, beta = syrk
        rows, width = ctypes.byref(ctypes.c_int(n)), ctypes.byref(ctypes.c_int(k))
        function(b"L", b"T", rows, width, one, x.ctypes.data, width, beta, out.ctypes.data, rows)
        return out
    if accumulate:
        out += x @ x.T
        return out
    return np.matmul(x, x.T, out=out)


_SYRK_TYPES = (np.dtype(np.float32), np.dtype(np.float64))


@functools.cache
def _syrk(code: str, accumulate: bool):
    """``(function, alpha = 1, beta)`` for SciPy's Cython BLAS ``ssyrk`` (``code`` ``"f"``) or ``dsyrk`` (``"d"``)
    as a ctypes function ``(uplo, trans, n, k, alpha, a, lda, beta, c, ldc)``, every argument by pointer (the
    Fortran BLAS interface, as :mod:`scipy.linalg.cython_blas` declares it); None where it cannot be reached."""
    try:
        from scipy.linalg import cython_blas  # noqa: PLC0415 - loaded on the first CPU Gram

        capsule = cython_blas.__pyx_capi__["ssyrk" if code == "f" else "dsyrk"]
        # prototypes of our own: ctypes.pythonapi's function objects are shared with every other user
        get_name = ctypes.PYFUNCTYPE(ctypes.c_char_p, ctypes.py_object)(("PyCapsule_GetName", ctypes.pythonapi))
        get_pointer = ctypes.PYFUNCTYPE(ctypes.c_void_p, ctypes.py_object, ctypes.c_char_p)(
            ("PyCapsule_GetPointer", ctypes.pythonapi)
        )
        address = get_pointer(capsule, get_name(capsule))
    except (ImportError, AttributeError, KeyError, ValueError):  # another SciPy build: NumPy's product
        return None
    real = ctypes.c_float if code == "f" else ctypes.c_double
    index, scalar = ctypes.POINTER(ctypes.c_int), ctypes.POINTER(real)
    text, pointer = ctypes.c_char_p, ctypes.c_void_p
    function = ctypes.CFUNCTYPE(None, text, text, index, index, scalar, pointer, index, scalar, pointer, index)(address)
    return function, real(1.0), real(1.0 if accumulate else 0.0)


@functools.cache
def _blas_controller():
    import scipy.linalg.cython_blas  # noqa: F401, PLC0415 - SciPy's BLAS (numpy_gram_) must be loaded to be limited
    from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - loaded on the first CPU Gram

    return ThreadpoolController()


def one_blas_thread():
    """A context in which the BLAS libraries (NumPy's, SciPy's) run on one thread (threadpoolctl), restored on exit."""
    return _blas_controller().limit(limits=1, user_api="blas")


_NUMPY_FLOATS = (torch.float32, torch.float64)


class full_precision_matmul:  # noqa: N801 - used as a context, like torch.no_grad
    """Within the block, float32 matrix products are true float32: no TF32 or bfloat16 passes, whatever
    ``torch.set_float32_matmul_precision`` says outside it (restored on exit)."""

    def __enter__(self) -> None:
        self.previous = torch.get_float32_matmul_precision()
        torch.set_float32_matmul_precision("highest")

    def __exit__(self, *exc) -> None:
        torch.set_float32_matmul_precision(self.previous)


# In float32 work, products are summed in float32 over blocks of this many terms and the blocks in float64
# (the all-pairs product, the Grams of flattened activations), so the rounding error does not grow with size.
FLOAT32_BLOCK = 4096


def symmetric_gram(gram: torch.Tensor) -> torch.Tensor:
    """``(K + K^T) / 2`` in float64: a Gram formed by a matrix product may be asymmetric in its last bits."""
    gram = gram.to(torch.float64)
    return 0.5 * (gram + gram.transpose(-2, -1))


def identical_rows(gram: torch.Tensor) -> torch.Tensor:
    """Boolean ``(..., n, n)`` mask of example pairs with identical features, read off a symmetric Gram.

    For a positive semi-definite ``K = X X^T``, ``x_i = x_j`` exactly when
    ``K_ii = K_ij = K_jj`` (then ``||x_i - x_j||^2 = K_ii + K_jj - 2 K_ij = 0``). Identical rows
    give bit-identical dot products, so the test is exact on a Gram formed from the features.
    """
    diag = gram.diagonal(dim1=-2, dim2=-1)
    return (gram == diag[..., :, None]) & (gram == diag[..., None, :])


def squared_distances(x: torch.Tensor | Gram) -> torch.Tensor:
    """Squared Euclidean distances ``D_ij = ||x_i - x_j||^2`` in float64, exactly 0 between identical rows.

    Computed as ``K_ii + K_jj - 2 K_ij`` from the linear Gram (of the centred features, for
    conditioning; of the given matrix for a :class:`Gram`). Rounding leaves residues of about
    ``1e-16 ||x||^2`` where the true distance is 0; those pairs are set to exactly 0 (for
    features, rows that compare equal; for a Gram, pairs with ``K_ii = K_ij = K_jj``), so the
    result, and the median bandwidth taken from it, does not depend on the order of the rows.
    Negative rounding residues are clamped to 0 and the diagonal is 0.

    Args:
        x: ``(n, d)`` features or a :class:`Gram`.

    Returns:
        ``(n, n)`` float64 matrix.
    """
    if isinstance(x, Gram):
        gram = symmetric_gram(x.matrix)
        same = identical_rows(gram)
    else:
        xc = center_features(x)
        gram = xc @ xc.T
        ids = torch.unique(x, dim=0, return_inverse=True)[1]
        same = ids[:, None] == ids[None, :]
    return squared_distances_from_gram(gram, same)


def squared_distances_from_gram(gram: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """``K_ii + K_jj - 2 K_ij`` of a stack of symmetric Grams ``(..., n, n)``, clamped at 0 and 0 where ``same``."""
    diag = gram.diagonal(dim1=-2, dim2=-1)
    sq_dist = diag[..., :, None] + diag[..., None, :] - 2.0 * gram
    return sq_dist.clamp_min_(0.0).masked_fill_(same, 0.0)


def check_sigma_frac(sigma_frac: float) -> None:
    """Refuse a non-positive RBF bandwidth fraction."""
    if not sigma_frac > 0:
        raise KernelError(
            f"the RBF bandwidth fraction must be > 0, got {sigma_frac}; set analysis.sigma_frac to e.g. 1.0"
        )


def rbf_from_squared_distances(sq_dist: torch.Tensor, sigma_frac: float = 1.0) -> torch.Tensor:
    """``exp(-D / (2 sigma^2))`` with ``sigma^2 = sigma_frac^2 median(D)`` for a stack ``(..., n, n)``.

    The median is taken over each full ``n x n`` matrix, zeros of the diagonal included; a matrix
    whose median is 0 (more than half of the pairs coincide) has no bandwidth and gives all NaN.
    """
    check_sigma_frac(sigma_frac)
    median = _median_numpy_style(sq_dist.flatten(-2))
    median = torch.where(median > 0, median, torch.nan)
    return torch.exp(-sq_dist / (2.0 * sigma_frac**2 * median[..., None, None]))


def gram_rbf(x: torch.Tensor | Gram, sigma_frac: float = 1.0) -> torch.Tensor:
    """RBF kernel with the median-distance bandwidth of Kornblith et al. (2019).

    ``K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2))`` with
    ``sigma^2 = sigma_frac^2 * median_{i,j} ||x_i - x_j||^2``, the median taken over the full
    ``n x n`` matrix of squared distances, zeros of the diagonal included, as in the authors'
    reference code. The distances come from :func:`squared_distances`, so a layer given as a
    :class:`Gram` gets the same kernel as its features.

    Args:
        x: features, shape ``(n, d)``, or a :class:`Gram`.
        sigma_frac: bandwidth as a fraction of the median distance (must be > 0).

    Returns:
        ``(n, n)`` float64 kernel matrix. If the median squared distance is 0 (more than half
        of the pairs coincide) the bandwidth is undefined and the result is all NaN.
    """
    check_sigma_frac(sigma_frac)
    return rbf_from_squared_distances(squared_distances(x), sigma_frac)


def _median_numpy_style(values: torch.Tensor) -> torch.Tensor:
    """Median over the last dimension that averages the two middle values of an even count, as NumPy's
    (and so Kornblith's reference code) does; ``torch.median`` would return the lower one."""
    sorted_values, _ = torch.sort(values, dim=-1)
    k = sorted_values.shape[-1]
    if k % 2:
        return sorted_values[..., k // 2]
    return 0.5 * (sorted_values[..., k // 2 - 1] + sorted_values[..., k // 2])


def center_gram(gram: torch.Tensor) -> torch.Tensor:
    """Double centring ``H K H`` with ``H = I - 11^T / n`` (biased HSIC, Gretton et al. 2005).

    Args:
        gram: ``(..., n, n)`` symmetric kernel matrices.

    Returns:
        ``(..., n, n)`` centred matrices, float64 (or the input's dtype if it is float32).
    """
    if gram.dtype != torch.float32:
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
        ``(..., n, n)`` U-centred matrices, float64 (or the input's dtype if it is float32).
    """
    if gram.dtype != torch.float32:
        gram = gram.to(torch.float64)
    n = gram.shape[-1]
    if n < 4:
        raise ShapeError(f"U-centring needs n >= 4 examples, got n={n}; use more images or drop --unbiased")
    eye = torch.eye(n, dtype=torch.bool, device=gram.device)
    gram = gram.masked_fill(eye, 0.0)
    means = gram.sum(dim=-1) / (n - 2)
    means = means - means.sum(dim=-1, keepdim=True) / (2 * (n - 1))
    centered = gram - means[..., :, None] - means[..., None, :]
    return centered.masked_fill(eye, 0.0)
