"""Rendering helpers for the plot tests: lay a figure out with Agg and read where its text landed."""

from __future__ import annotations

from matplotlib.backends.backend_agg import FigureCanvasAgg

SAVE_DPIS = (100, 150, 200)
"""The dpis figures are drawn and saved at: the figure's own, the zoo's, CKAResult.save's."""


def rendered(fig, dpi: float | None = None):
    """Draw ``fig`` with Agg (as ``savefig`` to PNG does), at ``dpi`` if given, and return its renderer."""
    if dpi is not None:
        fig.set_dpi(dpi)
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def inside_figure(fig, artist, renderer) -> bool:
    """Whether ``artist``'s drawn extent lies within the figure (half a pixel of tolerance)."""
    box, figure_box = artist.get_window_extent(renderer), fig.bbox
    return (
        box.x0 >= figure_box.x0 - 0.5
        and box.x1 <= figure_box.x1 + 0.5
        and box.y0 >= figure_box.y0 - 0.5
        and box.y1 <= figure_box.y1 + 0.5
    )
