"""The layer-identification figure: it names the data and the checkpoints, and lists only lines one can see."""

from __future__ import annotations

import pandas as pd

from cka_probe.jobs.identify import IdentifyResult

from ._render import SAVE_DPIS, inside_figure, rendered

LAYERS = ["act1", "layer1.0.act1", "layer1.0.act2", "layer2.0.act1"]


def _result(flatten_shares):
    mean_shares = [1.0, 0.5, 0.5, 1.0]
    rows = [
        {"pooling": pool, "position": i, "layer": layer, "share": share}
        for pool, shares in (("mean", mean_shares), ("flatten", flatten_shares))
        for i, (layer, share) in enumerate(zip(LAYERS, shares), 1)
    ]
    overall = {
        pool: {"share": sum(r["share"] for r in rows if r["pooling"] == pool) / 4} for pool in ("mean", "flatten")
    }
    metadata = {
        "model": "resnet18",
        "networks": [{"label": f"seed{i}/best.pth"} for i in range(3)],
        "data": {"source": "Fashion-MNIST test split (/usr/share/datasets/fashion-mnist)"},
        "n": 64,
        "pooling": ["mean", "flatten"],
        "tokens": {"rule": "patch", "description": "..."},
        "estimator": "full",
        "kernel": "linear",
    }
    return IdentifyResult(pd.DataFrame(rows), overall, {}, metadata)


def _legend(fig):
    return [t.get_text() for t in fig.axes[0].get_legend().get_texts()]


def test_title_names_the_data_n_and_the_checkpoints():
    fig = _result([1.0, 0.5, 0.25, 1.0]).plot()
    title = fig.axes[0].title
    assert title.get_text().replace("\n", " ") == (
        "layer identification: 3 × resnet18 Fashion-MNIST test split · n=64 · "
        "checkpoints seed0/best.pth, seed1/best.pth, seed2/best.pth"
    )
    for dpi in SAVE_DPIS:
        assert inside_figure(fig, title, rendered(fig, dpi))


def test_poolings_with_the_same_shares_are_one_line_named_after_both():
    fig = _result([1.0, 0.5, 0.5, 1.0]).plot()  # flatten identifies exactly the layers mean does
    assert len(fig.axes[0].get_lines()) == 1
    assert _legend(fig) == ["mean = flatten (75.0 % overall)"]
    fig = _result([1.0, 0.5, 0.25, 1.0]).plot()
    assert _legend(fig) == ["mean (75.0 % overall)", "flatten (68.8 % overall)"]
    lines = fig.axes[0].get_lines()
    assert len(lines) == 2
    assert lines[0].get_linestyle() != lines[1].get_linestyle()  # where they run together, the dashes show both
