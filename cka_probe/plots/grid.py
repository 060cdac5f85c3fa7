"""A grid of CKA heatmaps with one shared colour scale (the layout of the OFA-KD supplementary's Figure 6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from .heatmap import new_figure, plot_cka_heatmap

__all__ = ["Panel", "plot_panel_grid"]


@dataclass
class Panel:
    """One heatmap of a grid: its table, title and axis labels."""

    matrix: pd.DataFrame
    title: str
    xlabel: str | None = None
    ylabel: str | None = None


def plot_panel_grid(
    panels: Sequence[Sequence[Panel | None]],
    *,
    title: str | None = None,
    cmap: str = "magma",
    panel_size: float = 3.0,
    max_ticks: int = 6,
) -> Figure:
    """Draw rows of panels (``None`` leaves a cell empty) with one colour bar for the whole figure.

    Returns:
        The figure (not yet saved).
    """
    rows = len(panels)
    cols = max(len(row) for row in panels)
    fig = new_figure(width=panel_size * cols + 1.0, height=panel_size * rows + (0.4 if title else 0.0))
    axes = fig.subplots(rows, cols, squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            panel = panels[r][c] if c < len(panels[r]) else None
            if panel is None:
                ax.set_axis_off()
                continue
            plot_cka_heatmap(panel.matrix, ax, title=panel.title, xlabel=panel.xlabel, ylabel=panel.ylabel,
                             cmap=cmap, colorbar=False, max_ticks=max_ticks)
    fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=axes.ravel().tolist(), label="CKA",
                 shrink=0.8)
    if title:
        fig.suptitle(title)
    return fig
