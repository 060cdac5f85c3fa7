"""The layer-identification figure: per layer, the share of network pairs that identify it, one line per pooling."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ._text import keep_titles_inside, wrap_to_width
from .heatmap import new_figure, thinned_ticks

__all__ = ["plot_identification"]

_POOL_STYLE = {"flatten": ("#d95f02", "o", "--"), "mean": ("#1b9e77", "s", "-"), "max": ("#7570b3", "^", ":")}
"""Colour, marker and line style per pooling: dashed and dotted lines let a line that runs under another show."""


def plot_identification(
    table: pd.DataFrame,
    overall: Mapping[str, Mapping[str, float]] | None = None,
    *,
    title: str | None = None,
    subtitle: str | None = None,
) -> Figure:
    """Draw the share of ordered network pairs that identify each layer, per pooling, against layer depth.

    Poolings whose shares are the same at every layer are drawn as one line named after all of them
    (``"mean = flatten"``): a line hidden under another would be listed in the legend and not seen.

    Args:
        table: rows with ``pooling``, ``position`` (1-based), ``layer`` and ``share`` (0 to 1), as made by
            :func:`cka_probe.jobs.identify.identify`.
        overall: pooling -> ``{"share": ...}``, shown in the legend.
        title: figure title.
        subtitle: second line(s): the data, n, the checkpoints and the settings.

    Returns:
        The figure (not registered with pyplot).
    """
    fig = new_figure(width=6.0, height=3.6 if subtitle else 3.4)
    ax = fig.subplots()
    groups: list[tuple[list[str], pd.DataFrame]] = []  # poolings with the same share at every layer share a line
    for pool, rows in table.groupby("pooling", sort=False):
        rows = rows.sort_values("position")
        same = next(
            (
                group
                for group in groups
                if group[1]["position"].tolist() == rows["position"].tolist()
                and np.allclose(group[1]["share"].to_numpy(), rows["share"].to_numpy(), rtol=0.0, atol=1e-12)
            ),
            None,
        )
        if same is None:
            groups.append(([str(pool)], rows))
        else:
            same[0].append(str(pool))
    for pools, rows in groups:
        colour, marker, style = _POOL_STYLE.get(pools[0], ("#999999", "x", "-."))
        label = " = ".join(pools)
        if overall and pools[0] in overall:
            label += f" ({100 * overall[pools[0]]['share']:.1f} % overall)"
        ax.plot(
            rows["position"],
            100 * rows["share"],
            marker=marker,
            color=colour,
            linestyle=style,
            label=label,
            lw=1.2,
            ms=4,
            mfc="none" if len(groups) > 1 and style != "-" else colour,  # hollow: the marker under it shows
        )
    layers = table.drop_duplicates("position").sort_values("position")
    ticks = thinned_ticks(len(layers), 12)
    ax.set_xticks(layers["position"].to_numpy()[ticks])
    ax.set_xticklabels(layers["layer"].to_numpy()[ticks], rotation=60, ha="right", fontsize=7)
    ax.set_ylim(-3, 103)
    ax.set_ylabel("pairs identifying the layer (%)")
    ax.set_xlabel("layer (forward order)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    heading = "\n".join(part for part in (title, subtitle) if part)
    if heading:
        ax.set_title(wrap_to_width(heading, 0.95 * fig.get_figwidth() * 72.0, 9.0), fontsize=9)
        keep_titles_inside(fig, {ax.title: heading})
    return fig
