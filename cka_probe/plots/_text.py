"""Text measured as Agg draws it: widths for wrapping titles and deciding whether layer names fit."""

from __future__ import annotations

import functools
from collections.abc import Iterable

from matplotlib.figure import Figure
from matplotlib.font_manager import FontProperties
from matplotlib.text import Text

__all__ = ["keep_titles_inside", "text_size", "wrap_to_width"]


@functools.lru_cache(maxsize=1)
def _renderer():
    from matplotlib.backends.backend_agg import RendererAgg

    return RendererAgg(1, 1, 720)  # ten pixels a point: text extents to a tenth of a point


def text_size(text: str, fontsize: float) -> tuple[float, float]:
    """Width and height in points of one line of ``text`` in the default font at ``fontsize``."""
    width, height, _ = _renderer().get_text_width_height_descent(text, FontProperties(size=fontsize), ismath=False)
    return width / 10.0, height / 10.0


def _split_word(word: str, width: float, fontsize: float) -> list[str]:
    """A word wider than ``width`` cut into pieces that fit (long paths and layer names have no spaces)."""
    pieces, current = [], ""
    for char in word:
        if current and text_size(current + char, fontsize)[0] > width:
            pieces.append(current)
            current = char
        else:
            current += char
    return pieces + [current]


def wrap_to_width(text: str, width: float, fontsize: float) -> str:
    """``text`` with line breaks so that every line is at most ``width`` points wide at ``fontsize``.

    Existing line breaks are kept; lines break at spaces, and inside a word only when it alone is too wide.
    """
    lines = []
    for paragraph in text.split("\n"):
        current = ""
        for word in paragraph.split(" "):
            candidate = f"{current} {word}" if current else word
            if text_size(candidate, fontsize)[0] <= width:
                current = candidate
                continue
            if current:
                lines.append(current)
            pieces = _split_word(word, width, fontsize) if text_size(word, fontsize)[0] > width else [word]
            lines.extend(pieces[:-1])
            current = pieces[-1]
        lines.append(current)
    return "\n".join(lines)


def _titles(fig: Figure) -> Iterable[Text]:
    if fig._suptitle is not None and fig._suptitle.get_text():
        yield fig._suptitle
    for ax in fig.axes:
        if ax.title.get_text():
            yield ax.title


def keep_titles_inside(fig: Figure, original: dict[Text, str] | None = None, tries: int = 4) -> None:
    """Lay the figure out and re-wrap any title (axes titles and the suptitle) that reaches past its edges.

    Each try wraps an overflowing title to the width that its anchor (the axes' or figure's centre) leaves
    on its narrower side, then lays the figure out again, since wrapping changes the layout.
    """
    original = original or {text: text.get_text() for text in _titles(fig)}
    for _ in range(tries):
        fig.draw_without_rendering()
        figure_box = fig.bbox
        overflowing = []
        for text in _titles(fig):
            box = text.get_window_extent()
            if box.x0 < figure_box.x0 - 0.5 or box.x1 > figure_box.x1 + 0.5:
                overflowing.append((text, box))
        if not overflowing:
            return
        points_per_pixel = 72.0 / fig.dpi
        for text, box in overflowing:
            centre = 0.5 * (box.x0 + box.x1)
            room = 2.0 * min(centre - figure_box.x0, figure_box.x1 - centre) * 0.95 * points_per_pixel
            width = min(room, 0.9 * box.width * points_per_pixel)
            text.set_text(wrap_to_width(original.get(text, text.get_text()), width, text.get_fontsize()))
