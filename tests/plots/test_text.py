from __future__ import annotations

from matplotlib.figure import Figure

from cka_probe.plots._text import text_size, wrap_to_width

SUBTITLE = (
    "mobilenetv2: random weights (seed 0); vit_s: pretrained weights (vit_small_patch16_224.augreg_in21k_ft_in1k)"
    " · image folder /data/datasets/imagenet/validation/subset_for_probe · n=128"
)


def test_text_size_matches_what_a_figure_draws():
    """Within font hinting's few per cent at the dpis figures are drawn and saved at."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    for dpi in (72, 100, 150, 200, 300):
        fig = Figure(figsize=(4, 2), dpi=dpi)
        text = fig.text(0.1, 0.5, "blocks.11.mlp.act", fontsize=7)
        drawn = text.get_window_extent(FigureCanvasAgg(fig).get_renderer()).width * 72.0 / dpi  # in points
        assert abs(text_size("blocks.11.mlp.act", 7)[0] / drawn - 1.0) < 0.06


def test_every_wrapped_line_fits_and_no_character_is_lost():
    for width in (400.0, 250.0, 120.0, 60.0):
        wrapped = wrap_to_width(SUBTITLE, width, 9)
        lines = wrapped.split("\n")
        assert all(text_size(line, 9)[0] <= width for line in lines)
        assert "".join(wrapped.split()) == "".join(SUBTITLE.split())
    assert wrap_to_width("short", 400, 9) == "short"
    assert wrap_to_width("title\nsub · title", 400, 9) == "title\nsub · title"  # given breaks kept


def test_breaks_between_parts_and_balances_lines():
    text = "random weights (seed 0) · embedded Fashion-MNIST test subset · n=16"
    width = text_size(text, 9)[0] - 5  # one line too wide
    lines = wrap_to_width(text, width, 9).split("\n")
    assert lines == ["random weights (seed 0) ·", "embedded Fashion-MNIST test subset · n=16"]  # not "n=16" alone
