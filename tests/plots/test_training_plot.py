"""CKA to the teacher against epochs: what the drawn lines and titles hold."""

from __future__ import annotations

import numpy as np
import pytest

from cka_probe.plots.training import plot_cka_runs, plot_cka_to_teacher

from ._render import inside_figure, rendered

QUESTIONS = ["stage1", "stage2", "stage3", "stage4", "final"]


def _records(epochs, offset=0.0, ema=True):
    records = []
    for epoch in epochs:
        values = {name: round(0.1 * i + 0.01 * epoch + offset, 6) for i, name in enumerate(QUESTIONS)}
        cka = {"n": 128, "student": values}
        if ema:
            cka["ema"] = {name: value + 0.005 for name, value in values.items()}
        records.append({"epoch": epoch, "cka_to_teacher": cka})
    return records


def test_one_run_draws_a_line_per_stage_and_model_against_epochs():
    records = _records([2, 4, 6])
    fig = plot_cka_to_teacher(records, student="resnet18", teacher="swin_tiny", data="cifar100", method="ofa")
    (ax,) = fig.axes
    lines = ax.get_lines()
    assert len(lines) == 10  # 5 questions x (student, EMA)
    by_data = {tuple(np.round(line.get_ydata(), 6)): line for line in lines}
    for model in ("student", "ema"):
        for name in QUESTIONS:
            ys = tuple(np.round([r["cka_to_teacher"][model][name] for r in records], 6))
            line = by_data[ys]
            assert list(line.get_xdata()) == [2, 4, 6]
            assert line.get_linestyle() == ("-" if model == "student" else "--")
    legend = [text.get_text() for text in ax.get_legend().get_texts()]
    assert legend == ["stage 1", "stage 2", "stage 3", "stage 4", "final features", "student", "EMA"]
    title = fig._suptitle.get_text()
    for part in ("resnet18", "swin_tiny", "cifar100", "128 probe images", "ofa"):
        assert part in title
    renderer = rendered(fig)
    assert inside_figure(fig, fig._suptitle, renderer)


def test_several_runs_side_by_side_one_panel_per_method():
    runs = {
        "scratch": _records([1, 2], ema=False),
        "kd": _records([1, 2], 0.05, ema=False),
        "ofa": _records([1, 2], 0.1),
    }
    fig = plot_cka_runs(runs, student="resnet18", teacher="swin_tiny", data="cifar100")
    assert [ax.get_title() for ax in fig.axes] == ["scratch", "kd", "ofa"]
    assert [len(ax.get_lines()) for ax in fig.axes] == [5, 5, 10]
    assert [ax.get_legend() is not None for ax in fig.axes] == [False, False, True]
    assert fig.axes[1].get_ylim() == pytest.approx(fig.axes[0].get_ylim())  # one CKA axis for every panel
    assert "128 probe images" in fig._suptitle.get_text()


def test_the_epoch_axis_shows_whole_epochs_only():
    for epochs in ([1], [2, 4, 6], list(range(1, 41))):
        fig = plot_cka_to_teacher(_records(epochs), student="s", teacher="t", data="d")
        ticks = [t for t in fig.axes[0].get_xticks() if min(epochs) - 0.5 <= t <= max(epochs) + 0.5]
        assert ticks and all(float(t).is_integer() for t in ticks), epochs
