from __future__ import annotations

import pytest

from cka_probe.errors import CKAProbeError
from cka_probe.plots import LABEL_MODES, check_labels, data_text, figure_title, settings_text, weights_text


def _compare_metadata(weights_a="random", weights_b="random", **extra_a):
    """The keys :func:`cka_probe.compare` stores that titles read (models a/b, weights, data, n)."""
    model_a = {"name": "mobilenetv2", "weights": weights_a, "seed": 0, "pretrained_tag": None, **extra_a}
    model_b = {"name": "vit_s", "weights": weights_b, "seed": 0, "pretrained_tag": None}
    return {
        "models": {"a": model_a, "b": model_b},
        "weights": {"a": weights_a, "b": weights_b},
        "data": {
            "source": "synthetic images (seed 0; generated colour fields for smoke tests, not natural images)",
            "kind": "synthetic-seed0",
            "synthetic": True,
        },
        "n": 128,
    }


def test_random_weights_and_the_data_are_named():
    heading = figure_title(_compare_metadata())
    assert heading.title == "mobilenetv2 vs vit_s"
    assert heading.subtitle == "random weights (seed 0) · synthetic images · n=128"
    assert str(heading) == "mobilenetv2 vs vit_s\nrandom weights (seed 0) · synthetic images · n=128"


def test_each_model_named_when_their_weights_differ():
    meta = _compare_metadata("pretrained", "random")
    meta["models"]["a"]["pretrained_tag"] = "mobilenetv2_100.ra_in1k"
    assert (
        weights_text(meta)
        == "mobilenetv2: pretrained weights (mobilenetv2_100.ra_in1k); vit_s: random weights (seed 0)"
    )
    assert weights_text(meta, detail=False) == "mobilenetv2: pretrained weights; vit_s: random weights"


def test_two_seeds_of_one_architecture_are_told_apart():
    meta = _compare_metadata()
    meta["models"]["b"].update(name="mobilenetv2", seed=1)
    assert weights_text(meta) == "mobilenetv2 (A): random weights (seed 0); mobilenetv2 (B): random weights (seed 1)"


def test_checkpoint_named_by_its_file():
    meta = _compare_metadata(
        "checkpoint", "checkpoint", checkpoint_path="/runs/ofa/student.pt", checkpoint_key="model_ema"
    )
    meta["models"]["b"]["checkpoint_path"] = "/runs/ofa/teacher.pt"
    assert weights_text(meta) == "mobilenetv2: weights from student.pt (model_ema); vit_s: weights from teacher.pt"


def test_figure_job_metadata_and_kernel():
    """A figure job keys its models by label and has no top-level weights; a non-linear kernel is said."""
    meta = {
        "models": {label: {"name": label, "weights": "pretrained"} for label in ("r18", "r50", "vit")},
        "data": {"source": "Fashion-MNIST test split (/usr/share/fashion-mnist)", "synthetic": False},
        "n": 64,
        "kernel": "rbf",
    }
    heading = figure_title(meta, title="CNN vs ViT")
    assert heading.title == "CNN vs ViT"
    assert heading.subtitle == "pretrained weights · Fashion-MNIST test split · n=64 · rbf kernel"
    assert figure_title(meta).title == "CKA of 3 models"


def test_missing_metadata_says_unknown_rather_than_failing():
    heading = figure_title({})
    assert heading.subtitle == "unknown weights · unknown images · n=?"
    assert data_text({"data": {"kind": "folder"}}) == "folder"
    assert data_text({"data": {"source": "image folder /tmp/x (flat, 9 images)", "synthetic": True}}) == (
        "image folder /tmp/x (synthetic)"
    )


def test_label_modes_checked_with_the_option_named():
    for mode in LABEL_MODES:
        assert check_labels(mode) == mode
    with pytest.raises(CKAProbeError, match=r"^unknown axis labels 'numbers'; use --labels auto, names, index$"):
        check_labels("numbers")


def test_titles_module_does_not_load_matplotlib():
    import subprocess
    import sys

    code = (
        "import sys, cka_probe.plots.titles as t, cka_probe.plots as p; p.figure_title({}); "
        "print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_twelve_models_of_two_checkpoints_keep_the_weights_to_one_short_phrase():
    """Six best.pth and six init.pth checkpoints: counted per file, not listed per model (five lines before)."""
    models = {
        f"net{i}": {
            "name": f"mobilenetv2_{i:03d}",
            "weights": "checkpoint",
            "checkpoint_path": f"runs/study/net{i}/{'best' if i < 6 else 'init'}.pth",
            "checkpoint_key": "student" if i < 6 else None,
        }
        for i in range(12)
    }
    meta = {"models": models, "data": {"source": "Fashion-MNIST test split (/x)"}, "n": 128}
    assert weights_text(meta) == "weights: best.pth ×6, init.pth ×6"
    assert figure_title(meta).subtitle == "weights: best.pth ×6, init.pth ×6 · Fashion-MNIST test split · n=128"
    mixed = {**models, "r": {"name": "resnet18", "weights": "random", "seed": 0}}
    assert weights_text({"models": mixed}) == "weights: best.pth ×6, init.pth ×6, random (seed 0) ×1"


def test_settings_are_read_from_what_each_result_records():
    from cka_probe.engine.estimation import _POOLING, pooling_description

    for pool in _POOLING:  # every recorded pooling description is read back as its pooling
        said = settings_text({"pooling": pooling_description(pool)})
        assert said == ("" if pool == "mean" else {"max": "max pooling", "flatten": "flattened (no pooling)"}[pool])
    # a figure or zoo job records one token rule; identify records {"rule": ...}
    assert settings_text({"tokens": "cls"}) == "tokens cls"
    assert settings_text({"tokens": {"rule": "all", "description": "..."}}) == "tokens all"
    assert settings_text({"estimator": "full", "unbiased": True}) == "unbiased HSIC"
    assert settings_text({"estimator": "minibatch", "minibatch_size": 32, "unbiased": True}) == (
        "minibatch estimator, batches of 32"
    )
