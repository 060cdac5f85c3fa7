"""One CKA heatmap in the style of the OFA-KD supplementary (Figure 6)."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

__all__ = ["new_figure", "plot_cka_heatmap", "thinned_ticks"]


def new_figure(width: float = 5.2, height: float = 4.4, **kwargs) -> Figure:
    """A figure that does not depend on pyplot's global state (safe in scripts and servers)."""
    return Figure(figsize=(width, height), layout="constrained", **kwargs)


def thinned_ticks(count: int, max_ticks: int = 10) -> list[int]:
    """Indices of at most ``max_ticks`` evenly spread ticks, always the first and the last.

    >>> thinned_ticks(35, 8)
    [0, 5, 10, 15, 20, 25, 30, 34]
    """
    if count <= max_ticks:
        return list(range(count))
    step = int(np.ceil((count - 1) / (max_ticks - 1)))
    ticks = list(range(0, count - 1, step))
    if count - 1 - ticks[-1] <= step / 2 and len(ticks) > 1:
        ticks[-1] = count - 1
    else:
        ticks.append(count - 1)
    return ticks


def plot_cka_heatmap(
    matrix: pd.DataFrame,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    max_ticks: int = 10,
    tick_labels: str = "index",
    cmap: str = "magma",
    colorbar: bool = True,
    mask: pd.DataFrame | np.ndarray | None = None,
    hatch_mask: pd.DataFrame | np.ndarray | None = None,
) -> Axes:
    """Draw a CKA matrix: rows (model A) on the y-axis with the first layer at the bottom, columns
    (model B) on the x-axis, colour scale fixed to [0, 1], NaN cells left blank.

    Args:
        matrix: CKA values, index = layers of A in forward order, columns = layers of B.
        ax: axes to draw on; a new figure is made when ``None``.
        title: panel title.
        xlabel, ylabel: axis labels (default "layers of <columns.name>" / "<index.name>").
        max_ticks: most ticks per axis; the labels are thinned evenly beyond that.
        tick_labels: ``"index"`` (1-based layer numbers, as in the paper) or ``"names"``.
        cmap: colour map.
        colorbar: draw a colour bar.
        mask: extra cells to leave blank (True = hidden), beside the NaN ones.
        hatch_mask: cells to mark with a dot, e.g. those not significant in a permutation test.

    Returns:
        The axes drawn on.
    """
    import seaborn as sns

    if ax is None:
        ax = new_figure().subplots()
    values = matrix.to_numpy(dtype=float)
    hidden = np.isnan(values)
    if mask is not None:
        hidden |= np.asarray(mask, dtype=bool)
    sns.heatmap(
        values,
        ax=ax,
        vmin=0.0,
        vmax=1.0,
        cmap=cmap,
        mask=hidden,
        cbar=colorbar,
        cbar_kws={"label": "CKA"} if colorbar else None,
        square=False,
        xticklabels=False,
        yticklabels=False,
    )
    ax.invert_yaxis()  # the first layer of A at the bottom
    rows, cols = values.shape
    xt, yt = thinned_ticks(cols, max_ticks), thinned_ticks(rows, max_ticks)
    ax.set_xticks([i + 0.5 for i in xt])
    ax.set_yticks([i + 0.5 for i in yt])
    if tick_labels == "names":
        ax.set_xticklabels([str(matrix.columns[i]) for i in xt], rotation=90, fontsize=6)
        ax.set_yticklabels([str(matrix.index[i]) for i in yt], fontsize=6)
    elif tick_labels == "index":
        ax.set_xticklabels([str(i + 1) for i in xt], rotation=0)
        ax.set_yticklabels([str(i + 1) for i in yt])
    else:
        raise ValueError(f"tick_labels must be 'index' or 'names', got {tick_labels!r}")
    if hatch_mask is not None:
        r, c = np.nonzero(np.asarray(hatch_mask, dtype=bool) & ~hidden)
        ax.scatter(c + 0.5, r + 0.5, s=4, c="white", marker=".", linewidths=0)
    ax.set_xlabel(xlabel if xlabel is not None else f"layers of {matrix.columns.name or 'B'}")
    ax.set_ylabel(ylabel if ylabel is not None else f"layers of {matrix.index.name or 'A'}")
    if title:
        ax.set_title(title, fontsize=10)
    return ax
