"""The zoo's summary figure: a clustered heatmap of one score per model pair."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

__all__ = ["plot_pair_scores", "FAMILY_COLOURS"]

FAMILY_COLOURS = {"cnn": "#1b9e77", "vit": "#d95f02", "mlp": "#7570b3", "hybrid": "#e7298a", "unknown": "#999999"}


def plot_pair_scores(scores: pd.DataFrame, families: pd.Series | None = None, *, score_name: str = "score",
                     vmin: float | None = 0.0, vmax: float | None = 1.0) -> Figure:
    """Cluster models by a symmetric pair score and draw it, families as a colour strip.

    The diagonal (a model with itself) is drawn as 1, the score's value for identical representations.

    Args:
        scores: symmetric ``(models, models)`` table; off-diagonal NaN are drawn blank and clustered as 0.
        families: family label per model, for the colour strip.
        score_name: colour bar label.
        vmin, vmax: colour range (``None``: from the data).

    Returns:
        The clustermap's figure.
    """
    import seaborn as sns

    array = scores.to_numpy(dtype=float, copy=True)
    np.fill_diagonal(array, 1.0)
    values = pd.DataFrame(array, index=scores.index, columns=scores.columns)
    row_colors = None
    if families is not None:
        row_colors = families.reindex(values.index).fillna("unknown").map(lambda f: FAMILY_COLOURS.get(f, "#999999"))
        row_colors.name = "family"
    size = max(6.0, 0.35 * len(values) + 3.0)
    metric_input = values.fillna(0.0)
    grid = sns.clustermap(metric_input, mask=values.isna(), cmap="magma", vmin=vmin, vmax=vmax, figsize=(size, size),
                          row_colors=row_colors, col_colors=row_colors, cbar_kws={"label": score_name},
                          method="average", xticklabels=True, yticklabels=True)
    grid.figure.suptitle(f"model pairs by {score_name}", y=1.02)
    import matplotlib.pyplot as plt

    plt.close(grid.figure)  # seaborn made it through pyplot; release pyplot's reference, the figure still saves
    return grid.figure
