"""One-number summaries of a CKA matrix.

Relative depth of layer ``i`` of a model with ``L`` recorded layers: ``d(i) = (i + 1/2) / L``,
the centre of the layer's share of the network's depth, in (0, 1).

*Diagonal-band CKA*: the mean CKA over the band of cells whose two layers sit at about the same
relative depth, ``|d_a(i) - d_b(j)| <= w`` (``w = 0.1`` by default). A row (layer of A) with no
cell in the band gets its nearest cells instead, those with the smallest ``|d_a(i) - d_b(j)|``
(all of them on a tie), and so does a column (layer of B) with no cell in the band. The band is
a set of cells, each counted once, and NaN cells are left out. The definition treats rows and
columns alike, so a matrix and its transpose (``compare A B`` and ``compare B A``) get the same
score. High when layers at matching depths learn similar representations, as homogeneous pairs
do in the OFA-KD supplementary's Figure 6 and heterogeneous pairs do not.

*Depth correspondence*: whether each layer's best match in the other model sits at the same relative
depth, whatever the CKA values are. With ``j*(i) = argmax_j C_ij`` and ``i*(j) = argmax_i C_ij``::

    MAD = 1/2 * ( mean_i |d_a(i) - d_b(j*(i))| + mean_j |d_b(j) - d_a(i*(j))| )
    DC  = 1 - 3 * MAD

``E|U - V| = 1/3`` for independent uniform depths, so ``DC`` is 1 when every best match sits at
the same relative depth (a diagonal), about 0 when best matches are unrelated to depth (chance),
and negative when they run against it (an anti-diagonal gives about -1/2). Rows and columns that
are all NaN are left out; ties go to the shallowest layer.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pandas as pd

__all__ = [
    "depth_correspondence",
    "diagonal_band_mask",
    "diagonal_band_mean",
    "relative_depths",
    "score_interval",
]

DEFAULT_BAND = 0.1


def relative_depths(num_layers: int) -> np.ndarray:
    """``(i + 1/2) / L`` for ``i = 0 .. L-1``.

    >>> relative_depths(4).tolist()
    [0.125, 0.375, 0.625, 0.875]
    """
    return (np.arange(num_layers) + 0.5) / num_layers


def diagonal_band_mask(rows: int, cols: int, width: float = DEFAULT_BAND) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of the diagonal band (see the module docstring).

    The cells with ``|d_a(i) - d_b(j)| <= width``, plus, for every row and every column with none of
    them, its nearest cells. Every row and every column has a cell in the mask, and
    ``diagonal_band_mask(cols, rows)`` is the transpose of ``diagonal_band_mask(rows, cols)``.

    >>> diagonal_band_mask(4, 2, width=0.1).astype(int).tolist()
    [[1, 0], [1, 0], [0, 1], [0, 1]]
    """
    da, db = relative_depths(rows), relative_depths(cols)
    gap = np.abs(da[:, None] - db[None, :])
    band = gap <= width
    nearest_in_row = gap == gap.min(axis=1, keepdims=True)
    nearest_in_col = gap == gap.min(axis=0, keepdims=True)
    empty_row = ~band.any(axis=1, keepdims=True)
    empty_col = ~band.any(axis=0, keepdims=True)
    return band | (nearest_in_row & empty_row) | (nearest_in_col & empty_col)


def diagonal_band_mean(matrix: pd.DataFrame | np.ndarray, width: float = DEFAULT_BAND) -> float:
    """Mean CKA over the cells of :func:`diagonal_band_mask` (see the module docstring); NaN cells are skipped.

    The same for a matrix and its transpose.

    >>> diagonal_band_mean(np.eye(3))
    1.0
    """
    values = np.asarray(matrix, dtype=float)
    band = diagonal_band_mask(*values.shape, width=width) & ~np.isnan(values)
    # fsum is exactly rounded, so the cells' order (a matrix or its transpose) cannot change the last bit.
    return math.fsum(values[band].tolist()) / int(band.sum()) if band.any() else float("nan")


def depth_correspondence(matrix: pd.DataFrame | np.ndarray) -> float:
    """Chance-corrected agreement of best-match depths, ``1 - 3 * MAD`` (see the module docstring).

    >>> depth_correspondence(np.eye(4))
    1.0
    >>> round(depth_correspondence(np.fliplr(np.eye(4))), 3)
    -0.5
    """
    values = np.asarray(matrix, dtype=float)
    rows, cols = values.shape
    da, db = relative_depths(rows), relative_depths(cols)
    gaps = []
    for table, own, other in ((values, da, db), (values.T, db, da)):
        live = ~np.all(np.isnan(table), axis=1)
        if not live.any():
            return float("nan")
        best = np.nanargmax(np.where(np.isnan(table[live]), -np.inf, table[live]), axis=1)
        gaps.append(np.abs(own[live] - other[best]).mean())
    return float(1.0 - 3.0 * 0.5 * (gaps[0] + gaps[1]))


def score_interval(
    replicates: np.ndarray, score: Callable[[np.ndarray], float] = diagonal_band_mean, level: float = 0.95
) -> tuple[float, float]:
    """Bootstrap percentile interval of a one-number summary of a CKA matrix.

    ``score`` (:func:`diagonal_band_mean`, :func:`depth_correspondence`, ...) is applied to every
    replicate matrix (:func:`cka_probe.math.bootstrap_replicates`: all cells of a replicate come from
    one resample of the images) and the interval is ``[q_{(1 - level) / 2}, q_{(1 + level) / 2}]`` of
    those values (Efron & Tibshirani 1993, Ch. 13; NumPy's linear interpolation), as
    :func:`cka_probe.math.bootstrap_ci` takes it cell by cell. A replicate whose score is NaN makes the
    interval NaN, as an undefined replicate does there.

    Args:
        replicates: ``(K, L_a, L_b)`` bootstrap replicates of the matrix.
        score: the summary, a function of one ``(L_a, L_b)`` matrix.
        level: confidence level in (0, 1).

    Returns:
        ``(low, high)``.

    >>> reps = np.stack([np.eye(3) * v for v in (0.5, 0.7, 0.9)])
    >>> [round(v, 6) for v in score_interval(reps, level=0.5)]
    [0.6, 0.8]
    """
    values = np.array([score(matrix) for matrix in np.asarray(replicates, dtype=float)])
    if values.size == 0 or np.isnan(values).any():
        return float("nan"), float("nan")
    low, high = np.quantile(values, [(1.0 - level) / 2.0, (1.0 + level) / 2.0])
    return float(low), float(high)
