"""One-number summaries of a CKA matrix.

Relative depth of layer ``i`` of a model with ``L`` recorded layers: ``d(i) = (i + 1/2) / L``,
the centre of the layer's share of the network's depth, in (0, 1).

*Diagonal-band CKA*: the mean CKA over the cells whose two layers sit at about the same relative
depth, ``|d_a(i) - d_b(j)| <= w`` (``w = 0.1`` by default); NaN cells are left out. High when
layers at matching depths learn similar representations, as homogeneous pairs do in the OFA-KD
supplementary's Figure 6 and heterogeneous pairs do not.

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

import numpy as np
import pandas as pd

__all__ = ["relative_depths", "diagonal_band_mask", "diagonal_band_mean", "depth_correspondence"]

DEFAULT_BAND = 0.1


def relative_depths(num_layers: int) -> np.ndarray:
    """``(i + 1/2) / L`` for ``i = 0 .. L-1``.

    >>> relative_depths(4).tolist()
    [0.125, 0.375, 0.625, 0.875]
    """
    return (np.arange(num_layers) + 0.5) / num_layers


def diagonal_band_mask(rows: int, cols: int, width: float = DEFAULT_BAND) -> np.ndarray:
    """Boolean ``(rows, cols)`` mask of the cells within ``width`` of equal relative depth.

    Every row has at least its nearest column in the band, so the mask is never empty.
    """
    da, db = relative_depths(rows), relative_depths(cols)
    gap = np.abs(da[:, None] - db[None, :])
    return (gap <= width) | (gap == gap.min(axis=1, keepdims=True))


def diagonal_band_mean(matrix: pd.DataFrame | np.ndarray, width: float = DEFAULT_BAND) -> float:
    """Mean CKA inside the diagonal band (see the module docstring); NaN cells are skipped.

    >>> diagonal_band_mean(np.eye(3))
    1.0
    """
    values = np.asarray(matrix, dtype=float)
    band = diagonal_band_mask(*values.shape, width=width) & ~np.isnan(values)
    return float(values[band].mean()) if band.any() else float("nan")


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
