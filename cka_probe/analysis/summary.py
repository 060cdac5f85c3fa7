"""One-number summaries of a CKA matrix.

Relative depth of layer ``i`` of a model with ``L`` recorded layers: ``d(i) = (i + 1/2) / L``,
the centre of the layer's share of the network's depth, in (0, 1).

*Diagonal-band CKA*: the mean CKA over the cells whose two layers sit at about the same relative
depth, ``|d_a(i) - d_b(j)| <= w`` (``w = 0.1`` by default); NaN cells are left out. High when
layers at matching depths learn similar representations, as homogeneous pairs do in the OFA-KD
supplementary's Figure 6 and heterogeneous pairs do not.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

__all__ = ["relative_depths", "diagonal_band_mask", "diagonal_band_mean"]

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
