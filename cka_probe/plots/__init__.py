"""Heatmaps and figure grids. matplotlib and seaborn are imported here and nowhere else;
nothing here computes CKA: it draws the tables the analysis step made."""

from .heatmap import new_figure, plot_cka_heatmap, thinned_ticks

__all__ = ["new_figure", "plot_cka_heatmap", "thinned_ticks"]
