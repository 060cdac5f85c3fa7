"""Titles of a comparison of two checkpoints of one architecture name each side by its label, not its letter."""

from __future__ import annotations

from cka_probe.plots.titles import figure_title, weights_text

META = {
    "models": {
        "a": {
            "name": "resnet18",
            "label": "resnet18 · seed0/best.pth (epoch 7)",
            "weights": "checkpoint",
            "checkpoint_path": "/r/seed0/best.pth",
        },
        "b": {
            "name": "resnet18",
            "label": "resnet18 · seed1/last.pth (epoch 9)",
            "weights": "checkpoint",
            "checkpoint_path": "/r/seed1/last.pth",
        },
    },
    "data": {"source": "embedded probe set"},
    "n": 8,
}


def test_weights_of_two_runs_are_named_by_their_labels():
    assert weights_text(META) == (
        "resnet18 · seed0/best.pth (epoch 7): weights from best.pth; "
        "resnet18 · seed1/last.pth (epoch 9): weights from last.pth"
    )
    assert figure_title(META, title="x").subtitle.startswith("resnet18 · seed0/best.pth (epoch 7): weights from")
