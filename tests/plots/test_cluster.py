from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import Normalize, TwoSlopeNorm

from cka_probe.errors import ArgumentError
from cka_probe.plots import FAMILY_COLOURS, plot_pair_scores, score_colours

from ._render import SAVE_DPIS, inside_figure, rendered

MODELS = ["resnet18", "resnet50", "vit_s", "vit_t", "mixer_b16", "coatnet_0"]
FAMILIES = pd.Series(["cnn", "cnn", "vit", "vit", "mlp", "hybrid"], index=MODELS)


def _scores(low=-2.0, high=1.0, seed=0):
    rng = np.random.default_rng(seed)
    values = rng.uniform(low, high, (len(MODELS), len(MODELS)))
    values = (values + values.T) / 2
    return pd.DataFrame(values, index=MODELS, columns=MODELS)


def _mesh(fig, models=MODELS):
    heatmaps = [
        ax
        for ax in fig.axes
        if ax.collections
        and ax.get_xticklabels()
        and ax.get_yticklabels()
        and {t.get_text() for t in ax.get_xticklabels()} == set(models)
    ]
    return heatmaps[0].collections[0]


def test_score_that_can_be_negative_gets_a_diverging_scale_centred_at_zero():
    norm, cmap = score_colours(-2.0, 1.0)
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0.0 and (norm.vmin, norm.vmax) == (-2.0, 1.0)
    assert cmap == "RdBu_r"
    norm, cmap = score_colours(0.0, 1.0)
    assert type(norm) is Normalize and (norm.vmin, norm.vmax) == (0.0, 1.0) and cmap == "magma"
    with pytest.raises(ArgumentError, match=r"a colour range needs vmin < vmax, got \[1.0, 1.0\]"):
        score_colours(1.0, 1.0)


def test_depth_correspondence_drawn_diverging_negative_values_blue_not_black():
    fig = plot_pair_scores(_scores(), FAMILIES, score_name="depth correspondence", vmin=-2.0, vmax=1.0)
    mesh = _mesh(fig)
    norm = mesh.norm
    assert isinstance(norm, TwoSlopeNorm) and norm.vcenter == 0.0 and (norm.vmin, norm.vmax) == (-2.0, 1.0)
    assert mesh.get_cmap().name == "RdBu_r"
    red, _, blue, _ = mesh.to_rgba(-1.0)
    assert blue > red and blue > 0.5  # a negative score is blue ...
    assert min(mesh.to_rgba(0.0)[:3]) > 0.9  # ... zero is white ...
    red, _, blue, _ = mesh.to_rgba(1.0)
    assert red > blue  # ... and agreement red
    colorbar = mesh.colorbar
    assert [float(t) for t in colorbar.get_ticks()] == [-2.0, 0.0, 1.0]


def test_cka_score_drawn_sequential():
    fig = plot_pair_scores(_scores(0.2, 0.9), FAMILIES, score_name="diagonal band cka")
    mesh = _mesh(fig)
    assert type(mesh.norm) is Normalize and (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 1.0)
    assert mesh.get_cmap().name == "magma"


def test_family_legend_lists_every_family_present_with_its_colour():
    fig = plot_pair_scores(_scores(0.0, 1.0), FAMILIES)
    assert len(fig.legends) == 1
    legend = fig.legends[0]
    assert [t.get_text() for t in legend.get_texts()] == ["CNN", "ViT", "MLP", "hybrid"]
    assert legend.get_title().get_text() == "family"
    colours = [handle.get_facecolor() for handle in legend.legend_handles]
    expected = [FAMILY_COLOURS[f] for f in ("cnn", "vit", "mlp", "hybrid")]
    from matplotlib.colors import to_rgba

    assert colours == [to_rgba(c) for c in expected]
    # only the families present, an unknown one as "unknown"
    fig = plot_pair_scores(_scores(0.0, 1.0), FAMILIES.replace({"mlp": "quantum", "hybrid": "cnn"}))
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["CNN", "ViT", "unknown"]


def test_title_and_legend_inside_the_figure_and_clear_of_the_heatmap():
    subtitle = "random weights (seed 0) · image folder /data/datasets/imagenet/validation/a_long_subset_name · n=128"
    fig = plot_pair_scores(_scores(), FAMILIES, score_name="depth correspondence", vmin=-2, vmax=1, subtitle=subtitle)
    legend, title = fig.legends[0], fig._suptitle
    assert title.get_text().startswith("model pairs by depth correspondence\n")
    for dpi in SAVE_DPIS:
        renderer = rendered(fig, dpi)
        assert inside_figure(fig, title, renderer) and inside_figure(fig, legend, renderer)
        legend_box, title_box = legend.get_window_extent(renderer), title.get_window_extent(renderer)
        assert legend_box.y1 <= title_box.y0 + 0.5  # the legend below the title
        for ax in fig.axes:  # and above every axes of the clustermap (colour bar in its corner included)
            if ax.get_visible():
                box = ax.get_tightbbox(renderer)
                assert box.y1 <= legend_box.y0 + 0.5 or box.x1 <= legend_box.x0 or box.x0 >= legend_box.x1


def test_colour_bar_in_its_corner_with_its_label_in_whole_words():
    fig = plot_pair_scores(_scores(), FAMILIES, score_name="depth correspondence", vmin=-2, vmax=1)
    mesh = _mesh(fig)
    bar = mesh.colorbar.ax
    assert bar.get_title(loc="left").split() == ["depth", "correspondence"]
    renderer = rendered(fig, 150)
    bar_box = bar.get_tightbbox(renderer)
    assert inside_figure(fig, bar, renderer)
    for ax in fig.axes:  # heatmap, dendrograms, family strips: none under the bar, its ticks or its label
        if ax is not bar and ax.get_visible() and ax.get_position().width > 0:
            box = ax.get_window_extent(renderer)
            assert not bar_box.overlaps(box), ax


def test_range_from_the_data_when_not_given():
    scores = _scores(-0.5, 0.8)
    mesh = _mesh(plot_pair_scores(scores, FAMILIES, vmin=None, vmax=None))
    low = float(np.nanmin(scores.to_numpy()))
    assert isinstance(mesh.norm, TwoSlopeNorm) and (mesh.norm.vmin, mesh.norm.vmax) == (low, 1.0)  # diagonal 1
    pair = pd.DataFrame([[1.0, np.nan], [np.nan, 1.0]], index=MODELS[:2], columns=MODELS[:2])  # only 1 drawn
    mesh = _mesh(plot_pair_scores(pair, vmin=None, vmax=None), MODELS[:2])
    assert (mesh.norm.vmin, mesh.norm.vmax) == (0.0, 1.0)


def test_values_beyond_the_range_get_an_arrow():
    scores = _scores(0.0, 1.0)
    scores.iloc[0, 2] = scores.iloc[2, 0] = -0.05  # an unbiased CKA slightly below 0
    fig = plot_pair_scores(scores, FAMILIES)
    assert _mesh(fig).colorbar.extend == "min"


def _overlapping(labels, renderer):
    """Pairs of drawn tick labels whose boxes intersect (more than a pixel)."""
    boxes = [(t.get_text(), t.get_window_extent(renderer)) for t in labels if t.get_text() and t.get_visible()]
    return [
        (a, b)
        for i, (a, box_a) in enumerate(boxes)
        for b, box_b in boxes[i + 1 :]
        if min(box_a.x1, box_b.x1) - max(box_a.x0, box_b.x0) > 1
        and min(box_a.y1, box_b.y1) - max(box_a.y0, box_b.y0) > 1
    ]


@pytest.mark.parametrize(
    "models",
    [["resnet18", "mobilenetv2", "swin_n", "vit_s"], [f"model_with_a_long_name_{i}" for i in range(12)]],
    ids=["zoo-of-four", "twelve-long-names"],
)
def test_model_names_do_not_overlap(models):
    """Row and column names each stand apart at every saving dpi ("swin_n" beside "mobilenetv2" once read
    "swin_mobilenetv2": seaborn turned the row names upright and neighbours ran into each other)."""
    rng = np.random.default_rng(0)
    values = rng.uniform(0.2, 0.9, (len(models), len(models)))
    scores = pd.DataFrame((values + values.T) / 2, index=models, columns=models)
    families = pd.Series(["cnn", "vit"] * (len(models) // 2), index=models)
    fig = plot_pair_scores(scores, families, subtitle="random weights (seed 0) · synthetic images · n=128")
    heatmap = _mesh(fig, models).axes
    for dpi in SAVE_DPIS:
        renderer = rendered(fig, dpi)
        assert _overlapping(heatmap.get_yticklabels(), renderer) == []
        assert _overlapping(heatmap.get_xticklabels(), renderer) == []
    assert all(t.get_rotation() == 0 for t in heatmap.get_yticklabels())  # names beside rows read across
