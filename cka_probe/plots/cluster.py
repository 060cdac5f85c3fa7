"""The zoo's summary figure: a clustered heatmap of one score per model pair, families as a colour strip."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import Normalize, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from ..errors import ArgumentError
from ._text import keep_titles_inside, text_size, wrap_to_width

__all__ = ["FAMILY_COLOURS", "FAMILY_NAMES", "plot_pair_scores", "score_colours"]

FAMILY_COLOURS = {"cnn": "#1b9e77", "vit": "#d95f02", "mlp": "#7570b3", "hybrid": "#e7298a", "unknown": "#999999"}
FAMILY_NAMES = {"cnn": "CNN", "vit": "ViT", "mlp": "MLP", "hybrid": "hybrid", "unknown": "unknown"}

SEQUENTIAL_CMAP = "magma"
DIVERGING_CMAP = "RdBu_r"
MISSING_COLOUR = "#d9d9d9"  # pairs without a value: light grey, apart from both colour scales' ends and centre


def score_colours(vmin: float, vmax: float) -> tuple[Normalize, str]:
    """Norm and colour map for a score whose range is ``[vmin, vmax]``.

    A score that can be negative (``vmin < 0 < vmax``, e.g. depth correspondence in [-2, 1]) gets a diverging map
    centred at 0 (:class:`~matplotlib.colors.TwoSlopeNorm`: white at 0, blue below, red above, each side stretched
    to its own end); a score that cannot (e.g. CKA in [0, 1]) gets a sequential map.

    >>> norm, cmap = score_colours(-2.0, 1.0)
    >>> cmap, float(norm(0.0)), float(norm(-2.0)), float(norm(1.0))
    ('RdBu_r', 0.5, 0.0, 1.0)
    >>> score_colours(0.0, 1.0)[1]
    'magma'
    """
    if not vmin < vmax:
        raise ArgumentError(f"a colour range needs vmin < vmax, got [{vmin}, {vmax}]")
    if vmin < 0.0 < vmax:
        return TwoSlopeNorm(vcenter=0.0, vmin=vmin, vmax=vmax), DIVERGING_CMAP
    return Normalize(vmin=vmin, vmax=vmax), SEQUENTIAL_CMAP


def _extend(values: np.ndarray, vmin: float, vmax: float) -> str:
    """The colour bar's arrows for values beyond the score's range (e.g. slightly negative unbiased CKA)."""
    low, high = bool(np.nanmin(values) < vmin), bool(np.nanmax(values) > vmax)
    return {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[(low, high)]


def _upright_labels(ax, fig: Figure) -> None:
    """Model names read left to right beside the rows, and under the columns where each fits its column (turned
    upright, one per column, where one does not): seaborn turns the row names when it finds them crowded, and
    turned names of neighbouring rows run into one another ("swin_n" and "mobilenetv2" read "swin_mobilenetv2")."""
    ax.set_yticks(ax.get_yticks(), [t.get_text() for t in ax.get_yticklabels()], rotation=0, va="center")
    names = [t.get_text() for t in ax.get_xticklabels()]
    fontsize = ax.get_xticklabels()[0].get_fontsize() if names else 10.0
    column = ax.get_position().width * fig.get_figwidth() * 72.0 / max(1, len(names))
    fits = all(text_size(name, fontsize)[0] <= 0.9 * column for name in names)
    ax.set_xticks(ax.get_xticks(), names, rotation=0 if fits else 90, ha="center")


def plot_pair_scores(
    scores: pd.DataFrame,
    families: pd.Series | None = None,
    *,
    score_name: str = "score",
    vmin: float | None = 0.0,
    vmax: float | None = 1.0,
    title: str | None = None,
    subtitle: str | None = None,
) -> Figure:
    """Cluster models by a symmetric pair score and draw it, families as a colour strip with a legend.

    The diagonal (a model with itself) is drawn as 1, the score's value for identical representations.

    Args:
        scores: symmetric ``(models, models)`` table; off-diagonal NaN are drawn grey and clustered as 0.
        families: family label per model (``cnn``, ``vit``, ``mlp``, ``hybrid``), for the colour strip.
        score_name: colour bar label.
        vmin, vmax: the score's range by its definition (``None``: the data's); a range below 0 gives a
            diverging scale centred at 0 (see :func:`score_colours`), e.g. ``vmin=-2, vmax=1`` for depth
            correspondence.
        title: headline (default ``"model pairs by <score_name>"``).
        subtitle: second line(s), e.g. weights, data and n (see :func:`cka_probe.plots.figure_title`).

    Returns:
        The clustermap's figure, every title and the legend inside it.
    """
    import matplotlib.pyplot as plt
    import seaborn as sns

    array = scores.to_numpy(dtype=float, copy=True)
    np.fill_diagonal(array, 1.0)
    values = pd.DataFrame(array, index=scores.index, columns=scores.columns)
    low = float(np.nanmin(array)) if vmin is None else float(vmin)
    high = float(np.nanmax(array)) if vmax is None else float(vmax)
    if vmin is None and low >= high:  # one value everywhere (e.g. two models, one pair): a range below it
        low = min(0.0, high - 1.0)
    norm, cmap = score_colours(low, high)
    row_colors, present = None, []
    if families is not None:
        labels = families.reindex(values.index).fillna("unknown").where(lambda f: f.isin(FAMILY_COLOURS), "unknown")
        row_colors = labels.map(FAMILY_COLOURS)
        row_colors.name = "family"
        present = [family for family in FAMILY_COLOURS if family in set(labels)]
    size = max(6.0, 0.35 * len(values) + 3.0)
    grid = sns.clustermap(
        values.fillna(0.0),
        mask=values.isna(),
        cmap=cmap,
        norm=norm,
        figsize=(size, size),
        row_colors=row_colors,
        col_colors=row_colors,
        cbar_kws={"orientation": "horizontal", "extend": _extend(array, low, high)},
        method="average",
        xticklabels=True,
        yticklabels=True,
    )
    plt.close(grid.figure)  # seaborn made it through pyplot; release pyplot's reference, the figure still saves
    fig = grid.figure
    grid.ax_heatmap.set_facecolor(MISSING_COLOUR)

    # A header band above the clustermap: the title, then the family legend in one row.
    heading = "\n".join(part for part in (title or f"model pairs by {score_name}", subtitle) if part)
    fontsize = 11.0
    heading = wrap_to_width(heading, 0.95 * size * 72.0, fontsize)
    line = fontsize * 1.3 / 72.0  # inches per title line
    header = line * (heading.count("\n") + 1) + 0.15 + (0.45 if present else 0.0)
    top = 1.0 - header / size
    cbar_box = grid.ax_cbar.get_position()
    grid.gs.update(top=top)  # moves only pyplot's figures' axes; this one's are moved below
    for ax in fig.axes:
        spec = ax.get_subplotspec()
        if ax is not grid.ax_cbar and spec is not None and spec.get_gridspec() is grid.gs:
            ax.set_position(spec.get_position(fig))
    # the colour bar lies across the corner above the row dendrogram, its label above it, its ticks below
    corner = (grid.ax_heatmap.get_position().x0 - cbar_box.x0 - 0.02) * size * 72.0  # points to the heatmap
    widest_word = max(text_size(word, 9.0)[0] for word in score_name.split())
    label_size = max(6.0, min(9.0, 0.92 * 9.0 * corner / widest_word))  # smaller rather than a word cut in two
    label = wrap_to_width(score_name, corner, label_size)
    label_height = (label.count("\n") + 1) * label_size * 1.3 / 72.0 / size
    bar_height = 0.12 / size
    bar_width = 0.9 * corner / 72.0 / size
    grid.ax_cbar.set_position([cbar_box.x0, top - 0.03 - label_height - bar_height, bar_width, bar_height])
    grid.ax_cbar.set_xlabel("")
    grid.ax_cbar.set_title(label, fontsize=label_size, loc="left")
    grid.ax_cbar.tick_params(labelsize=8.0)
    if isinstance(norm, TwoSlopeNorm):  # the ends and the centre, which the short bar's locator may skip
        grid.ax_heatmap.collections[0].colorbar.set_ticks([low, 0.0, high])
    _upright_labels(grid.ax_heatmap, fig)
    text = fig.suptitle(heading, y=1.0 - 0.08 / size, va="top", fontsize=fontsize)
    if present:
        handles = [Patch(facecolor=FAMILY_COLOURS[f], edgecolor="none", label=FAMILY_NAMES[f]) for f in present]
        fig.legend(
            handles=handles,
            title="family",
            loc="lower center",
            bbox_to_anchor=(0.5, top + 0.02 / size),
            ncol=len(handles),
            frameon=False,
            fontsize=9,
            title_fontsize=9,
            alignment="center",
        )
    keep_titles_inside(fig, {text: heading})
    return fig
