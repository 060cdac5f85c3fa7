"""CKAResult's one-line repr and its figure's title, from the metadata cka_probe.compare stores."""

from __future__ import annotations

import pandas as pd
import pytest

from cka_probe import compare
from cka_probe.errors import CKAProbeError
from cka_probe.jobs.summary import diagonal_band_mean
from cka_probe.plots import new_figure

from ._render import inside_figure, rendered


@pytest.fixture(scope="module")
def result():
    return compare(
        "test_resnet", "test_vit", "synthetic", n=8, weights="random", progress=False, device="cpu", cache=False
    )


def test_repr_is_one_short_line(result):
    rows, cols = result.matrix.shape
    band = diagonal_band_mean(result.matrix.to_numpy())  # the summary's function on the plain array
    assert repr(result) == (
        f"CKAResult(test_resnet {rows} layers x test_vit {cols} layers, diagonal band {band:.3f}, n=8, random weights)"
    )
    assert "\n" not in repr(result) and len(repr(result)) < 120


def test_repr_without_metadata_and_with_mixed_weights():
    matrix = pd.DataFrame(
        [[1.0, 0.2], [0.3, 0.8]],
        index=pd.Index(["a1", "a2"], name="resnet18"),
        columns=pd.Index(["b1", "b2"], name="vit_t"),
    )
    from cka_probe.jobs.result import CKAResult

    assert repr(CKAResult(matrix)) == (
        "CKAResult(resnet18 2 layers x vit_t 2 layers, diagonal band 0.900, n=?, unknown weights)"
    )
    meta = {"n": 64, "weights": {"a": "pretrained", "b": "random"}, "summary": {"diagonal_band_mean": 0.25}}
    assert repr(CKAResult(matrix, meta)) == (
        "CKAResult(resnet18 2 layers x vit_t 2 layers, diagonal band 0.250, "
        "n=64, A: pretrained weights; B: random weights)"
    )


def test_title_names_models_weights_data_and_n(result):
    assert result.title() == "test_resnet vs test_vit\nrandom weights (seed 0) · synthetic images · n=8"
    ax = result.plot(ax=new_figure().subplots())
    assert ax.get_title() == result.title()
    assert inside_figure(ax.figure, ax.title, rendered(ax.figure))


def test_save_passes_labels_and_checks_them_before_writing(result, tmp_path):
    with pytest.raises(CKAProbeError, match="--labels"):
        result.save(tmp_path / "out", labels="numbers")
    assert not (tmp_path / "out").exists()
    paths = result.save(tmp_path / "out", labels="index")
    assert paths["png"].stat().st_size > 0
    ax = result.plot(ax=new_figure().subplots(), labels="names")
    assert ax.get_xticklabels()[0].get_text() == result.matrix.columns[0]


@pytest.mark.parametrize(
    "settings, said",
    [
        ({"pool": "max"}, "max pooling"),
        (
            {"pool": "flatten", "estimator": "minibatch", "batch_size": 4},
            "flattened (no pooling) · minibatch estimator, batches of 4",
        ),
        ({"tokens_a": "cls", "tokens_b": "all", "b": "test_vit"}, "tokens cls (A), all (B)"),
        ({"kernel": "rbf", "sigma_frac": 0.5}, "rbf kernel (σ 0.5 × median)"),
        ({}, None),
    ],
    ids=["max", "flatten-minibatch", "tokens-per-side", "rbf", "defaults"],
)
def test_title_names_every_setting_that_differs_from_b1(settings, said, tmp_path):
    """The drawn title names pooling, estimator, kernel and tokens when they differ from B.1's (mean, full,
    linear, patch); with B.1's settings it names none of them."""
    settings = dict(settings)
    b = settings.pop("b", "test_resnet")
    result = compare(
        "test_vit", b, "synthetic", n=8, weights="random", progress=False, device="cpu", cache=False, **settings
    )
    paths = result.save(tmp_path, labels="names")
    drawn = " ".join(result.title().split("\n")[1:])
    assert paths["png"].exists()
    fig = new_figure()
    ax = result.plot(ax=fig.subplots(), labels="names")
    assert ax.get_title().replace("\n", " ") == f"{result.title().splitlines()[0]} {drawn}"
    if said is None:
        assert drawn == "random weights (seed 0) · synthetic images · n=8"
    else:
        assert drawn == f"random weights (seed 0) · synthetic images · n=8 · {said}"
