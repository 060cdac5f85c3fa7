"""The layer-identification figure: per layer, the share of network pairs that identify it, one line per pooling."""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd
from matplotlib.figure import Figure

from .heatmap import new_figure, thinned_ticks

__all__ = ["plot_identification"]

_POOL_STYLE = {"flatten": ("#d95f02", "o"), "mean": ("#1b9e77", "s"), "max": ("#7570b3", "^")}


def plot_identification(
    table: pd.DataFrame, overall: Mapping[str, Mapping[str, float]] | None = None, *, title: str | None = None
) -> Figure:
    """Draw the share of ordered network pairs that identify each layer, per pooling, against layer depth.

    Args:
        table: rows with ``pooling``, ``position`` (1-based), ``layer`` and ``share`` (0 to 1), as made by
            :func:`cka_probe.analysis.identify.identify`.
        overall: pooling -> ``{"share": ...}``, shown in the legend.
        title: figure title.

    Returns:
        The figure (not registered with pyplot).
    """
    fig = new_figure(width=6.0, height=3.4)
    ax = fig.subplots()
    for pool, rows in table.groupby("pooling", sort=False):
        colour, marker = _POOL_STYLE.get(str(pool), ("#999999", "x"))
        label = str(pool)
        if overall and pool in overall:
            label += f" ({100 * overall[pool]['share']:.1f} % overall)"
        ax.plot(rows["position"], 100 * rows["share"], marker=marker, color=colour, label=label, lw=1.2, ms=4)
    layers = table.drop_duplicates("position").sort_values("position")
    ticks = thinned_ticks(len(layers), 12)
    ax.set_xticks(layers["position"].to_numpy()[ticks])
    ax.set_xticklabels(layers["layer"].to_numpy()[ticks], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(-3, 103)
    ax.set_ylabel("pairs identifying the layer (%)")
    ax.set_xlabel("layer (forward order)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    if title:
        ax.set_title(title, fontsize=9)
    return fig
