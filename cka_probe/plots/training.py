"""CKA to the teacher against training epochs: the records a training run logs, drawn (nothing computed here).

A record is one line of a run's ``metrics.jsonl`` holding ``"cka_to_teacher": {"n": probe images,
"student": {"stage1": cka, ..., "final": cka}, "ema": {...}}`` (see :mod:`cka_probe.ofa.monitor`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from ._text import keep_titles_inside
from .heatmap import TITLE_FONTSIZE, new_figure

__all__ = ["plot_cka_runs", "plot_cka_to_teacher"]

_LINE_STYLES = {"student": "-", "ema": "--"}
_MODEL_LABELS = {"student": "student", "ema": "EMA"}


def _question_label(name: str) -> str:
    return f"stage {name[5:]}" if name.startswith("stage") else "final features"


def _colours(names: Sequence[str]) -> dict[str, Any]:
    """Stages from light to dark along one colour map, the final features in black."""
    from matplotlib import colormaps

    stages = [name for name in names if name.startswith("stage")]
    cmap = colormaps["viridis"]
    colours: dict[str, Any] = {name: cmap(0.85 - 0.75 * i / max(len(stages) - 1, 1)) for i, name in enumerate(stages)}
    colours.update({name: "black" for name in names if name not in colours})
    return colours


def _draw_axes(ax: Axes, records: Sequence[Mapping[str, Any]], legend: bool) -> None:
    epochs = [int(record["epoch"]) for record in records]
    models = [m for m in ("student", "ema") if any(m in r["cka_to_teacher"] for r in records)]
    names: list[str] = []
    for record in records:
        for model in models:
            for name in record["cka_to_teacher"].get(model, {}):
                if name not in names:
                    names.append(name)
    colours = _colours(names)
    for model in models:
        for name in names:
            values = [r["cka_to_teacher"].get(model, {}).get(name, float("nan")) for r in records]
            ax.plot(
                epochs,
                values,
                linestyle=_LINE_STYLES[model],
                marker="o" if len(epochs) < 30 else None,
                markersize=3,
                color=colours[name],
            )
    if 0 < len(epochs) <= 12:
        ax.set_xticks(epochs)  # each measured epoch (a locator would put fractions between one or two of them)
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("linear CKA to the teacher")
    ax.set_ylim(0.0, 1.02)
    if epochs:
        ax.set_xlim(min(epochs) - 0.5, max(epochs) + 0.5)
    ax.grid(alpha=0.3)
    if legend:  # colours name the stages, line styles the student and its EMA
        handles = [Line2D([], [], color=colours[name], marker="o", markersize=3) for name in names]
        labels = [_question_label(name) for name in names]
        if len(models) > 1:
            handles += [Line2D([], [], color="grey", linestyle=_LINE_STYLES[m]) for m in models]
            labels += [_MODEL_LABELS[m] for m in models]
        ax.legend(handles, labels, fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)


def _headline(student: str, teacher: str, data: str, n: int | None, what: str = "") -> str:
    probe = f", {n} probe images" if n else ""
    return f"CKA to the teacher during training{what}\nstudent {student}, teacher {teacher}, {data}{probe}"


def plot_cka_to_teacher(
    records: Sequence[Mapping[str, Any]], *, student: str, teacher: str, data: str, method: str = ""
) -> Figure:
    """One run: CKA of each student stage (and the final features) to the teacher's, against epochs.

    Args:
        records: the run's records holding ``cka_to_teacher``, in epoch order.
        student / teacher: the model names (title).
        data: the data set of the probe images (title).
        method: the training method (title).

    Returns:
        The figure (not saved): solid lines for the student, dashed for its EMA, one colour per stage.
    """
    n = records[0]["cka_to_teacher"].get("n") if records else None
    fig = new_figure(width=7.2, height=4.2)
    ax = fig.subplots()
    _draw_axes(ax, records, legend=True)
    fig.suptitle(_headline(student, teacher, data, n, f" ({method})" if method else ""), fontsize=TITLE_FONTSIZE)
    keep_titles_inside(fig)
    return fig


def plot_cka_runs(
    runs: Mapping[str, Sequence[Mapping[str, Any]]], *, student: str, teacher: str, data: str, panel_size: float = 3.4
) -> Figure:
    """Several runs side by side (e.g. the methods of a study), one panel each on a shared CKA axis.

    Args:
        runs: panel title (e.g. the method) -> that run's records holding ``cka_to_teacher``.
        student / teacher / data: as :func:`plot_cka_to_teacher`.
        panel_size: inches per panel.
    """
    first = next((records for records in runs.values() if records), [])
    n = first[0]["cka_to_teacher"].get("n") if first else None
    fig = new_figure(width=panel_size * len(runs) + 1.8, height=panel_size + 0.8)
    axes = fig.subplots(1, len(runs), squeeze=False, sharey=True)[0]
    for index, (ax, (title, records)) in enumerate(zip(axes, runs.items())):
        _draw_axes(ax, records, legend=index == len(runs) - 1)
        ax.set_title(title, fontsize=TITLE_FONTSIZE)
        if index:
            ax.set_ylabel("")
    fig.suptitle(_headline(student, teacher, data, n), fontsize=TITLE_FONTSIZE)
    keep_titles_inside(fig)
    return fig
