"""One CKA heatmap in the style of the OFA-KD supplementary (Figure 6)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from ._text import keep_titles_inside, text_size, wrap_to_width
from .titles import check_labels

__all__ = [
    "NAME_FONTSIZE",
    "names_fit",
    "names_fit_heatmap",
    "new_figure",
    "numbering_note",
    "plot_cka_heatmap",
    "thinned_ticks",
]

NAME_FONTSIZE = 7.0
"""Font size (points) of layer names: the smallest that stays legible in print."""

LINE_SPACING = 1.4
"""A name's row along its axis is at least this many times the font's measured line height."""

LAYOUT_SHARE = 0.9
"""Share of the axes' size before layout that is left once the figure is laid out (titles, labels, colour bar)."""

TITLE_FONTSIZE = 9.0
"""Font size (points) of a heatmap's title and subtitle."""

NAME_ROOM = 0.4
"""Longest layer name, as a share of the axes' other side, that leaves the heatmap room."""


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


def _line_height(fontsize: float) -> float:
    """Points each name needs along its axis: the font's measured line (ascender to descender) and spacing."""
    return LINE_SPACING * text_size("Ag", fontsize)[1]


def names_fit(names: Sequence[str], length: float, room: float, fontsize: float = NAME_FONTSIZE) -> bool:
    """Whether every name can label its own row along an axis ``length`` points long, the longest name
    taking at most ``room`` points across it, at ``fontsize`` (text extents measured with Agg).

    >>> names_fit(["conv1", "conv2"], length=200, room=100)
    True
    >>> names_fit([f"blocks.{i}.mlp.act" for i in range(35)], length=200, room=100)
    False
    """
    if not len(names):
        return True
    widest = max(text_size(str(name), fontsize)[0] for name in names)
    return widest <= room and len(names) * _line_height(fontsize) <= length


def _axes_size(ax: Axes) -> tuple[float, float]:
    """Width and height in points that the heatmap of ``ax`` keeps once the figure is laid out (estimated)."""
    fig = ax.figure.figure  # the root figure (an axes may sit in a subfigure); positions are fractions of it
    position = ax.get_position()
    return (
        LAYOUT_SHARE * position.width * fig.get_figwidth() * 72.0,
        LAYOUT_SHARE * position.height * fig.get_figheight() * 72.0,
    )


def _names_fit_axes(x_names: Sequence[str], y_names: Sequence[str], width: float, height: float) -> bool:
    """Whether both axes can carry names at once, each axis's names taking their width from the other's length."""
    x_wide = max(text_size(str(n), NAME_FONTSIZE)[0] for n in x_names) if len(x_names) else 0.0
    y_wide = max(text_size(str(n), NAME_FONTSIZE)[0] for n in y_names) if len(y_names) else 0.0
    return names_fit(x_names, width - y_wide, NAME_ROOM * height) and names_fit(
        y_names, height - x_wide, NAME_ROOM * width
    )


def names_fit_heatmap(matrix: pd.DataFrame, ax: Axes) -> bool:
    """Whether the layer names of ``matrix`` fit on both axes of a heatmap drawn on ``ax`` (``--labels auto``:
    names on both axes where they do, numbers on both where they do not, never one of each)."""
    width, height = _axes_size(ax)
    return _names_fit_axes([str(c) for c in matrix.columns], [str(i) for i in matrix.index], width, height)


def numbering_note(key: str | None) -> str:
    """What a figure with numbered axes says about its numbers, and where their layer names are.

    >>> numbering_note("grid_layers.csv")
    'layers numbered from 1 in forward order; names in grid_layers.csv'
    """
    return "layers numbered from 1 in forward order" + (f"; names in {key}" if key else "")


def _set_ticks(ax: Axes, axis: str, names: Sequence, show_names: bool, length: float, max_ticks: int) -> None:
    count = len(names)
    if show_names:  # every name when they fit, else as many evenly spread as fit
        capacity = max(2, int(length // _line_height(NAME_FONTSIZE))) if count else 0
        ticks = thinned_ticks(count, min(count, capacity)) if count else []
        texts = [str(names[i]) for i in ticks]
        kwargs = {"fontsize": NAME_FONTSIZE, "rotation": 90 if axis == "x" else 0}
    else:
        ticks = thinned_ticks(count, max_ticks) if count else []
        texts = [str(i + 1) for i in ticks]
        kwargs = {"rotation": 0}
    positions = [i + 0.5 for i in ticks]
    if axis == "x":
        ax.set_xticks(positions, texts, **kwargs)
    else:
        ax.set_yticks(positions, texts, **kwargs)


def plot_cka_heatmap(
    matrix: pd.DataFrame,
    ax: Axes | None = None,
    *,
    title: str | None = None,
    subtitle: str | None = None,
    xlabel: str | None = None,
    ylabel: str | None = None,
    max_ticks: int = 10,
    labels: str = "auto",
    cmap: str = "magma",
    colorbar: bool = True,
    mask: pd.DataFrame | np.ndarray | None = None,
    hatch_mask: pd.DataFrame | np.ndarray | None = None,
    fit_titles: bool = True,
    key: str | None = None,
) -> Axes:
    """Draw a CKA matrix: rows (model A) on the y-axis with the first layer at the bottom, columns
    (model B) on the x-axis, colour scale fixed to [0, 1], NaN cells left blank.

    Args:
        matrix: CKA values, index = layers of A in forward order, columns = layers of B.
        ax: axes to draw on; a new figure is made when ``None``.
        title: headline, e.g. ``"mobilenetv2 vs vit_s"`` (see :func:`cka_probe.plots.figure_title`).
        subtitle: second line(s): weights, data, n.
        xlabel, ylabel: axis labels (default "layers of <columns.name>" / "<index.name>").
        max_ticks: most ticks per axis with ``labels="index"``; the labels are thinned evenly beyond that.
        labels: ``"names"`` (layer names), ``"index"`` (1-based layer numbers, as in the paper) or ``"auto"``
            (names on both axes where every name fits at a legible size, measured; else numbers on both, never
            names on one axis and numbers on the other).
        cmap: colour map.
        colorbar: draw a colour bar.
        mask: extra cells to leave blank (True = hidden), beside the NaN ones.
        hatch_mask: cells to mark with a dot, e.g. those not significant in a permutation test.
        fit_titles: wrap the title to the figure's width, lay the figure out and re-wrap any title that would be
            clipped at the figure's edges; off, the title is wrapped to the axes' width (a grid's panels, whose
            titles the grid fits at once).
        key: where the numbered layers' names are written beside the figure (e.g. the result's CSV); when the
            axes carry numbers, the subtitle says so and names it (see :func:`numbering_note`).

    Returns:
        The axes drawn on.

    Raises:
        CKAProbeError: ``labels`` is not one of ``names``, ``index``, ``auto``.
    """
    import seaborn as sns

    check_labels(labels)
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
    fig = ax.figure.figure  # the root figure (an axes may sit in a subfigure); positions are fractions of it
    position = ax.get_position()
    width, height = _axes_size(ax)
    x_names, y_names = [str(c) for c in matrix.columns], [str(i) for i in matrix.index]
    names = labels == "names" or (labels == "auto" and _names_fit_axes(x_names, y_names, width, height))
    _set_ticks(ax, "x", x_names, names, width, max_ticks)
    _set_ticks(ax, "y", y_names, names, height, max_ticks)
    if not names and fit_titles:  # a figure's one heatmap says what its numbers are (a grid says it once)
        subtitle = "\n".join(part for part in (subtitle, numbering_note(key)) if part)
    if hatch_mask is not None:
        r, c = np.nonzero(np.asarray(hatch_mask, dtype=bool) & ~hidden)
        ax.scatter(c + 0.5, r + 0.5, s=4, c="white", marker=".", linewidths=0)
    # A long model label (a run's checkpoint: name, folder, epoch) wraps to the side of the heatmap it names.
    for axis, label, length in (
        (ax.xaxis, xlabel if xlabel is not None else f"layers of {matrix.columns.name or 'B'}", width),
        (ax.yaxis, ylabel if ylabel is not None else f"layers of {matrix.index.name or 'A'}", height),
    ):
        axis.set_label_text(wrap_to_width(label, length, axis.label.get_fontsize()))
    text = "\n".join(part for part in (title, subtitle) if part)
    if text:
        room = width  # a grid's panel keeps its title over itself
        if fit_titles:  # a figure's one heatmap: as wide as the figure allows; the layout pass narrows it if need be
            centre = (position.x0 + 0.5 * position.width) * fig.get_figwidth() * 72.0
            room = max(width, 0.95 * 2.0 * min(centre, fig.get_figwidth() * 72.0 - centre))
        ax.set_title(wrap_to_width(text, room, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
        if fit_titles:
            keep_titles_inside(fig, {ax.title: text})
    return ax
