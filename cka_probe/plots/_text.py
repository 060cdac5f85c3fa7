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


@functools.lru_cache(maxsize=4096)  # wrapping measures the same words and prefixes many times
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


HINTING_SLACK = 0.04
"""Share of a text's width it may grow by at another dpi (font hinting: 60 to 65 points for one 7-point name
between 72 and 300 dpi)."""

SEPARATOR = " · "
"""Between the parts of a subtitle (weights · data · n); lines break there first."""


def _add_words(words: list[str], current: str, lines: list[str], width: float, fontsize: float) -> str:
    """Append ``words`` to the line ``current``, pushing full lines onto ``lines``; returns the open line."""
    for word in words:
        candidate = f"{current} {word}" if current else word
        if text_size(candidate, fontsize)[0] <= width:
            current = candidate
            continue
        if current:
            lines.append(current)
        pieces = _split_word(word, width, fontsize) if text_size(word, fontsize)[0] > width else [word]
        lines.extend(pieces[:-1])
        current = pieces[-1]
    return current


def _wrap_line(paragraph: str, width: float, fontsize: float) -> list[str]:
    parts = paragraph.split(SEPARATOR)
    parts = [part + SEPARATOR.rstrip() for part in parts[:-1]] + parts[-1:]  # the dot ends its part's line
    lines: list[str] = []
    current = ""
    for part in parts:
        candidate = f"{current} {part}" if current else part
        if text_size(candidate, fontsize)[0] <= width:
            current = candidate
        elif text_size(part, fontsize)[0] <= width:
            lines.append(current)
            current = part
        else:
            words = part.split(" ")
            if len(words) > 1 and words[-1] == SEPARATOR.strip():  # the dot stays with its part's last word
                words[-2:] = [" ".join(words[-2:])]
            current = _add_words(words, current, lines, width, fontsize)
    return [line.strip() for line in (*lines, current)]


def wrap_to_width(text: str, width: float, fontsize: float) -> str:
    """``text`` with line breaks so that every line is at most ``width`` points wide at ``fontsize``.

    Existing line breaks are kept. Lines break between the `` · ``-separated parts of a line where a part fits
    on a line of its own, else at spaces, and inside a word only when it alone is too wide. A wrapped line is
    balanced: wrapped to the narrowest width that needs no more lines, so that no word is left alone at the end.
    """
    lines: list[str] = []
    for paragraph in text.split("\n"):
        wrapped = _wrap_line(paragraph, width, fontsize)
        if len(wrapped) > 1:
            # the line count only grows as the width shrinks: bisect for the narrowest, never below the widest
            # word, which would then be cut
            low = min(width, max(text_size(word, fontsize)[0] for word in paragraph.split(" ")))
            high = width
            for _ in range(10):
                middle = 0.5 * (low + high)
                trial = _wrap_line(paragraph, middle, fontsize)
                if len(trial) <= len(wrapped):
                    high, wrapped = middle, trial
                else:
                    low = middle
        lines.extend(wrapped)
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
    on its narrower side, then lays the figure out again, since wrapping changes the layout. A title must keep
    :data:`HINTING_SLACK` of its width clear of each edge, so that it fits at any dpi it is saved at.
    """
    original = original or {text: text.get_text() for text in _titles(fig)}
    for _ in range(tries):
        fig.draw_without_rendering()
        figure_box = fig.bbox
        overflowing = []
        for text in _titles(fig):
            box = text.get_window_extent()
            slack = HINTING_SLACK * box.width  # the same text is a few per cent wider at another dpi
            if box.x0 - slack < figure_box.x0 or box.x1 + slack > figure_box.x1:
                overflowing.append((text, box))
        if not overflowing:
            return
        points_per_pixel = 72.0 / fig.dpi
        for text, box in overflowing:
            centre = 0.5 * (box.x0 + box.x1)
            room = 2.0 * min(centre - figure_box.x0, figure_box.x1 - centre) * 0.95 * points_per_pixel
            width = min(room, 0.9 * box.width * points_per_pixel)
            text.set_text(wrap_to_width(original.get(text, text.get_text()), width, text.get_fontsize()))
