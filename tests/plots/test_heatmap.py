from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from cka_probe.errors import CKAProbeError
from cka_probe.plots import Panel, names_fit, new_figure, plot_cka_heatmap, plot_panel_grid, thinned_ticks

from ._render import SAVE_DPIS, inside_figure, rendered

MOBILENET_NAMES = ["bn1.act"] + [f"blocks.{i // 3}.{i % 3}.bn{1 + i % 2}.act" for i in range(33)] + ["bn2.act"]
VIT_NAMES = [f"blocks.{i}.mlp.act" for i in range(12)]


def _matrix(rows=35, cols=12, row_names=None, col_names=None):
    values = np.linspace(0, 1, rows * cols).reshape(rows, cols)
    return pd.DataFrame(
        values,
        index=pd.Index(row_names or [f"a{i}" for i in range(rows)], name="mobilenetv2"),
        columns=pd.Index(col_names or [f"b{j}" for j in range(cols)], name="vit_s"),
    )


def _labels(ax, axis):
    ticks = ax.get_xticklabels() if axis == "x" else ax.get_yticklabels()
    return [t.get_text() for t in ticks]


def test_first_layer_of_a_at_the_bottom_and_fixed_colour_scale():
    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(), ax, labels="index")
    bottom, top = ax.get_ylim()
    assert bottom < top and bottom == 0  # row 0 is drawn in [0, 1], at the bottom
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 1.0)
    assert ax.get_ylabel() == "layers of mobilenetv2" and ax.get_xlabel() == "layers of vit_s"


def test_nan_cells_are_masked_and_ticks_thinned():
    matrix = _matrix()
    matrix.iloc[3, 4] = np.nan
    ax = new_figure().subplots()
    plot_cka_heatmap(matrix, ax, max_ticks=8, labels="index")
    array = ax.collections[0].get_array()
    assert np.ma.count_masked(array) == 1
    assert len(ax.get_yticks()) <= 8 and ax.get_yticklabels()[0].get_text() == "1"
    assert ax.get_yticklabels()[-1].get_text() == "35"


def test_thinned_ticks_keep_both_ends():
    for count in (1, 5, 12, 35, 49, 100):
        ticks = thinned_ticks(count, 10)
        assert ticks[0] == 0 and ticks[-1] == count - 1 and len(ticks) <= 10
        assert ticks == sorted(set(ticks))


def test_auto_shows_short_names_on_both_axes():
    rows, cols = [f"conv{i}" for i in range(1, 9)], [f"blocks.{j}.act" for j in range(6)]
    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(8, 6, rows, cols), ax)  # labels="auto" is the default
    assert _labels(ax, "y") == rows and _labels(ax, "x") == cols
    # they really fit: drawn, no two neighbouring names overlap and every name lies inside the figure
    fig = ax.figure
    renderer = rendered(fig)
    for ticks, overlap in (
        (ax.get_yticklabels(), lambda a, b: a.y1 > b.y0),
        (ax.get_xticklabels(), lambda a, b: a.x1 > b.x0),
    ):
        boxes = [t.get_window_extent(renderer) for t in ticks]
        assert not any(overlap(a, b) for a, b in itertools.pairwise(boxes))
        assert all(inside_figure(fig, t, renderer) for t in ticks)


def test_auto_numbers_both_axes_when_one_axis_cannot_carry_names():
    """A MobileNetV2 (35 layers) against a ViT-S (12): the 35 names do not fit, so both axes carry numbers (names
    on one axis and numbers on the other could not be matched to each other), and the subtitle says where the
    names are."""
    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(35, 12, MOBILENET_NAMES, VIT_NAMES), ax, subtitle="n=128", key="A_vs_B.csv")
    y, x = _labels(ax, "y"), _labels(ax, "x")
    assert y[0] == "1" and y[-1] == "35" and all(text.isdigit() for text in y)
    assert x[0] == "1" and x[-1] == "12" and all(text.isdigit() for text in x)
    assert (
        ax.get_title().replace("\n", " ").endswith("n=128 layers numbered from 1 in forward order; names in A_vs_B.csv")
    )

    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(35, 35, MOBILENET_NAMES, MOBILENET_NAMES), ax)
    assert all(text.isdigit() for text in _labels(ax, "x") + _labels(ax, "y"))


def test_names_and_index_force_each():
    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(35, 12, MOBILENET_NAMES, VIT_NAMES), ax, labels="names")
    y = _labels(ax, "y")
    assert y[0] == MOBILENET_NAMES[0] and y[-1] == MOBILENET_NAMES[-1]  # thinned to what fits, ends kept
    assert set(y) <= set(MOBILENET_NAMES) and 2 <= len(y) < 35
    assert _labels(ax, "x") == VIT_NAMES

    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(4, 3, ["conv1", "conv2", "conv3", "conv4"], ["a", "b", "c"]), ax, labels="index")
    assert _labels(ax, "y") == ["1", "2", "3", "4"] and _labels(ax, "x") == ["1", "2", "3"]


def test_unknown_label_mode_names_the_option():
    with pytest.raises(CKAProbeError, match=r"unknown axis labels 'numbers'; use --labels auto, names, index"):
        plot_cka_heatmap(pd.DataFrame([[0.5]]), labels="numbers")


def test_names_fit_measures_count_and_width():
    names = [f"blocks.{i}.mlp.act" for i in range(12)]
    assert names_fit(names, length=200, room=100)
    assert not names_fit(names, length=60, room=100)  # twelve rows in 60 points: 5 points a name
    assert not names_fit(names, length=200, room=30)  # wider than the room across the axis
    assert names_fit([], length=0, room=0)


LONG_TITLE = "hf-hub:some-organisation/an-exceedingly-long-model-name-for-testing vs another_rather_long_name"
LONG_SUBTITLE = (
    "pretrained weights (vit_small_patch16_224.augreg_in21k_ft_in1k) · image folder "
    "/data/datasets/imagenet/validation/a_subset_chosen_for_the_probe · n=128"
)


def _title_is_clipped(fig, text) -> bool:
    """Whether ``text`` reaches past the figure at any dpi the figure may be saved at."""
    return not all(inside_figure(fig, text, rendered(fig, dpi)) for dpi in SAVE_DPIS)


def test_long_title_is_wrapped_inside_the_figure():
    fig = new_figure()
    ax = fig.subplots()
    ax.set_title(LONG_TITLE + " " + LONG_SUBTITLE, fontsize=9)
    assert _title_is_clipped(fig, ax.title)  # the check sees a clipped title: one line overruns the figure

    for width in (5.2, 3.0):
        fig = new_figure(width=width)
        ax = plot_cka_heatmap(
            _matrix(35, 12, MOBILENET_NAMES, VIT_NAMES), fig.subplots(), title=LONG_TITLE, subtitle=LONG_SUBTITLE
        )
        assert not _title_is_clipped(fig, ax.title)
        note = "layers numbered from 1 in forward order"  # 35 names do not fit: numbers, and the note says so
        expected = (LONG_TITLE + LONG_SUBTITLE + note).replace(" ", "")
        assert ax.title.get_text().replace("\n", "").replace(" ", "") == expected


def test_title_inside_when_the_axes_sits_in_a_subfigure():
    fig = new_figure()
    left, _ = fig.subfigures(1, 2)
    ax = plot_cka_heatmap(_matrix(6, 5), left.subplots(), title=LONG_TITLE)
    assert not _title_is_clipped(fig, ax.title)


def test_grid_titles_inside_and_labels_passed_to_every_panel():
    panels = [
        [
            Panel(_matrix(35, 12, MOBILENET_NAMES, VIT_NAMES), LONG_TITLE),
            Panel(_matrix(6, 5, [f"c{i}" for i in range(6)], [f"d{j}" for j in range(5)]), "short"),
        ]
    ]
    fig = plot_panel_grid(panels, title="CNN vs ViT", subtitle=LONG_SUBTITLE, labels="index")
    assert fig.get_suptitle().startswith("CNN vs ViT\n")
    for text in [fig._suptitle] + [ax.title for ax in fig.axes[:2]]:
        assert not _title_is_clipped(fig, text)
    assert all(t.get_text().isdigit() for ax in fig.axes[:2] for t in ax.get_xticklabels() + ax.get_yticklabels())
    fig = plot_panel_grid(panels, labels="auto")  # decided once: the 35 names do not fit, so no panel has names
    assert all(t.get_text().isdigit() for ax in fig.axes[:2] for t in ax.get_xticklabels() + ax.get_yticklabels())
    fig = plot_panel_grid([[panels[0][1], panels[0][1]]], labels="auto", key="grid_layers.csv")
    assert [t.get_text() for t in fig.axes[1].get_yticklabels()] == [f"c{i}" for i in range(6)]
    assert "numbered" not in fig.get_suptitle()  # names drawn: nothing to explain


def test_grid_of_numbers_says_where_the_names_are():
    panels = [[Panel(_matrix(35, 12, MOBILENET_NAMES, VIT_NAMES), "M vs V"), Panel(_matrix(6, 5), "short")]]
    fig = plot_panel_grid(panels, title="grid", subtitle="n=128", labels="auto", key="grid_layers.csv")
    assert (
        fig.get_suptitle()
        .replace("\n", " ")
        .endswith("layers numbered from 1 in forward order; names in grid_layers.csv")
    )
    assert all(t.get_text().isdigit() for ax in fig.axes[:2] for t in ax.get_xticklabels())


def test_long_model_labels_wrap_along_their_axes_inside_the_figure():
    # a run's checkpoint is named by model, folder and epoch: longer than the heatmap's side
    row_name = "vit_small_patch16_224 · runs/figure6/vit_s-s0/best.pth (epoch 3)"
    col_name = "vit_small_patch16_224 · runs/figure6/vit_s-s1/best.pth (epoch 3)"
    matrix = _matrix(6, 6, [f"blocks.{i}.mlp.act" for i in range(6)], [f"blocks.{i}.mlp.act" for i in range(6)])
    matrix.index.name, matrix.columns.name = row_name, col_name
    for dpi in SAVE_DPIS:
        fig = new_figure(width=5.2, height=4.2)
        ax = plot_cka_heatmap(matrix, fig.subplots(), title="A vs B")
        fig.set_layout_engine("constrained")
        renderer = rendered(fig, dpi)
        assert inside_figure(fig, ax.yaxis.label, renderer) and inside_figure(fig, ax.xaxis.label, renderer)
        for label, name in ((ax.yaxis.label, row_name), (ax.xaxis.label, col_name)):
            assert label.get_text().replace("\n", " ").replace("  ", " ") == f"layers of {name}"
