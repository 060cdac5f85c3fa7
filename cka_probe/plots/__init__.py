"""Heatmaps and figure grids. matplotlib and seaborn are imported here and nowhere else;
nothing here computes CKA: it draws the tables the analysis step made.

Submodules load on first use (PEP 562), so the titles (:mod:`.titles`, no matplotlib) cost nothing to import.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "FAMILY_COLOURS": "cluster",
    "plot_pair_scores": "cluster",
    "score_colours": "cluster",
    "Panel": "grid",
    "plot_panel_grid": "grid",
    "LABEL_MODES": "titles",
    "names_fit": "heatmap",
    "names_fit_heatmap": "heatmap",
    "numbering_note": "heatmap",
    "new_figure": "heatmap",
    "plot_cka_heatmap": "heatmap",
    "plot_identification": "identify",
    "thinned_ticks": "heatmap",
    "FigureTitle": "titles",
    "check_labels": "titles",
    "data_text": "titles",
    "figure_title": "titles",
    "settings_text": "titles",
    "weights_text": "titles",
}

__all__ = [
    "FAMILY_COLOURS",
    "LABEL_MODES",
    "FigureTitle",
    "Panel",
    "check_labels",
    "data_text",
    "figure_title",
    "names_fit",
    "names_fit_heatmap",
    "new_figure",
    "numbering_note",
    "plot_cka_heatmap",
    "plot_identification",
    "plot_pair_scores",
    "plot_panel_grid",
    "score_colours",
    "settings_text",
    "thinned_ticks",
    "weights_text",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
