"""A grid of CKA heatmaps with one shared colour scale (the layout of the OFA-KD supplementary's Figure 6)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd
from matplotlib.cm import ScalarMappable
from matplotlib.colors import Normalize
from matplotlib.figure import Figure

from ._text import keep_titles_inside, wrap_to_width
from .heatmap import TITLE_FONTSIZE, names_fit_heatmap, new_figure, numbering_note, plot_cka_heatmap

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
    subtitle: str | None = None,
    labels: str = "auto",
    cmap: str = "magma",
    panel_size: float = 3.0,
    max_ticks: int = 6,
    key: str | None = None,
) -> Figure:
    """Draw rows of panels (``None`` leaves a cell empty) with one colour bar for the whole figure.

    Args:
        panels: rows of panels.
        title: the figure's headline (e.g. the config's ``title``).
        subtitle: second line(s): weights, data, n (see :func:`cka_probe.plots.figure_title`).
        labels: ``"names"``, ``"index"`` or ``"auto"``, for every panel (see :func:`plot_cka_heatmap`); ``"auto"``
            is decided once for the figure: names on every panel where they fit on every panel, else numbers.
        cmap: colour map.
        panel_size: inches per panel.
        max_ticks: most ticks per axis when numbers are shown.
        key: where the layer names of numbered axes are written beside the figure; when the panels carry
            numbers, the heading says so and names it (see :func:`~cka_probe.plots.heatmap.numbering_note`).

    Returns:
        The figure (not yet saved); every title is wrapped to lie inside it.
    """
    rows = len(panels)
    cols = max(len(row) for row in panels)
    fig = new_figure(width=panel_size * cols + 1.0, height=panel_size * rows + 0.5)
    axes = fig.subplots(rows, cols, squeeze=False)
    drawn = [(panels[r][c], axes[r][c]) for r in range(rows) for c in range(len(panels[r])) if panels[r][c]]
    if labels == "auto":  # one decision for the figure, so that no panel has names beside a panel of numbers
        labels = "names" if all(names_fit_heatmap(panel.matrix, ax) for panel, ax in drawn) else "index"
    if labels == "index":
        subtitle = "\n".join(part for part in (subtitle, numbering_note(key)) if part)
    heading = "\n".join(part for part in (title, subtitle) if part)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r][c]
            panel = panels[r][c] if c < len(panels[r]) else None
            if panel is None:
                ax.set_axis_off()
                continue
            plot_cka_heatmap(
                panel.matrix,
                ax,
                title=panel.title,
                xlabel=panel.xlabel,
                ylabel=panel.ylabel,
                cmap=cmap,
                colorbar=False,
                max_ticks=max_ticks,
                labels=labels,
                fit_titles=False,
            )
    fig.colorbar(ScalarMappable(norm=Normalize(0.0, 1.0), cmap=cmap), ax=axes.ravel().tolist(), label="CKA", shrink=0.8)
    original = {}
    if heading:
        text = fig.suptitle(
            wrap_to_width(heading, 0.95 * fig.get_figwidth() * 72.0, TITLE_FONTSIZE + 1), fontsize=TITLE_FONTSIZE + 1
        )
        original[text] = heading
    keep_titles_inside(fig, original)
    return fig
