"""Tidy (long) tables of CKA matrices: one row per layer pair."""

from __future__ import annotations

import numpy as np
import pandas as pd

from .summary import relative_depths

__all__ = ["long_table"]


def long_table(matrix: pd.DataFrame, model_a: str, model_b: str) -> pd.DataFrame:
    """One row per cell: model_a, model_b, layer_a, layer_b, index_a, index_b, depth_a, depth_b, cka.

    ``index_*`` are 0-based forward positions, ``depth_*`` the relative depths ``(i + 1/2) / L``.

    >>> m = pd.DataFrame([[1.0, 0.5]], index=["conv"], columns=["fc1", "fc2"])
    >>> long_table(m, "A", "B")[["layer_a", "layer_b", "depth_b", "cka"]].values.tolist()
    [['conv', 'fc1', 0.25, 1.0], ['conv', 'fc2', 0.75, 0.5]]
    """
    rows, cols = matrix.shape
    index_a, index_b = np.divmod(np.arange(rows * cols), cols)
    return pd.DataFrame(
        {
            "model_a": model_a,
            "model_b": model_b,
            "layer_a": np.asarray(matrix.index, dtype=object)[index_a],
            "layer_b": np.asarray(matrix.columns, dtype=object)[index_b],
            "index_a": index_a,
            "index_b": index_b,
            "depth_a": relative_depths(rows)[index_a],
            "depth_b": relative_depths(cols)[index_b],
            "cka": matrix.to_numpy(dtype=float).ravel(),
        }
    )
