"""Heatmaps and figure grids. matplotlib and seaborn are imported here and nowhere else;
nothing here computes CKA: it draws the tables the analysis step made."""

from .cluster import FAMILY_COLOURS, plot_pair_scores
from .grid import Panel, plot_panel_grid
from .heatmap import new_figure, plot_cka_heatmap, thinned_ticks
from .identify import plot_identification

__all__ = ["FAMILY_COLOURS", "Panel", "new_figure", "plot_cka_heatmap", "plot_identification", "plot_pair_scores", "plot_panel_grid", "thinned_ticks"]
