"""The one-line errors of the analysis layer and of its plots, each with the message it promises."""

from __future__ import annotations

import pytest
import torch

import cka_probe.analysis.multi as multi_module
from cka_probe.analysis import ConfigError, compare, make_figure, parse_job_config, run_zoo
from cka_probe.analysis.figure import figure_paths
from cka_probe.analysis.multi import features_for_models
from cka_probe.analysis.result import output_paths
from cka_probe.errors import CKAProbeError, ShapeError

BASE = {"weights": "random", "data": {"source": "synthetic", "n": 8}, "models": ["test_resnet", "test_vit"]}


def _compare(data="synthetic", **kwargs):
    return compare("test_resnet", "test_vit", data, weights="random", progress=False, device="cpu", cache=False,
                   **kwargs)


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 8, "estimator": "exact"}, "unknown estimator 'exact'"),
    ({"n": 8, "tokens": "first"}, "unknown token rule 'first'"),
    ({"n": 1}, "n=1 images cannot give a CKA"),
    ({"n": 8, "batch_size": 0}, "--batch-size must be positive"),
    ({"n": 8, "batch_size": 3, "estimator": "minibatch"}, "batches of 4 or more"),
])  # fmt: skip
def test_compare_settings(kwargs, message):
    with pytest.raises(CKAProbeError, match=message):
        _compare(**kwargs)


def test_compare_inputs():
    with pytest.raises(ShapeError, match=r"must be \(N, 3, H, W\)"):
        _compare(torch.zeros(8, 3, 32), n=8)
    with pytest.raises(ShapeError, match="the tensor holds 6 images"):
        _compare(torch.zeros(6, 3, 32, 32), n=8)
    with pytest.raises(CKAProbeError, match="yielded no images"):
        _compare([], n=8)
    with pytest.raises(ShapeError, match="the data loader yielded 4 images"):
        _compare([torch.zeros(4, 3, 32, 32)], n=8)
    with pytest.raises(CKAProbeError, match="given as mappings"):
        _compare([{"image": torch.zeros(4, 3, 32, 32)}], n=8)
    with pytest.raises(CKAProbeError, match="got int"):
        _compare(42, n=8)


def test_unknown_figure_formats():
    with pytest.raises(CKAProbeError, match="unknown figure format 'gif'"):
        output_paths("out", "a_vs_b", ("gif",))
    figure = parse_job_config({**BASE, "panels": [[["test_resnet", "test_vit"]]], "output": {"formats": ["bmp"]}},
                              "figure")
    with pytest.raises(CKAProbeError, match="output.formats: unknown format 'bmp'"):
        figure_paths(figure)


@pytest.mark.parametrize("raw, message", [
    ([1, 2], "must be a mapping of sections"),
    ({**BASE, "weights": "imagenet"}, "weights: 'imagenet' is not pretrained or random"),
    ({**BASE, "models": []}, "list at least one model"),
    ({**BASE, "models": [{"label": "x"}]}, r"models\[0\]: give a model name"),
    ({**BASE, "models": [{"name": "test_vit", "weights": "best"}]}, r"models\[0\].weights: 'best'"),
    ({**BASE, "data": "embedded"}, "data: must be a mapping"),
    ({**BASE, "data": {"n": 1}}, "data.n: 1 is not a number of images >= 2"),
    ({**BASE, "analysis": {"tokens": "first"}}, "analysis.tokens: 'first'"),
    ({**BASE, "analysis": {"permutations": -1}}, "analysis.permutations: -1 is not a count"),
    ({**BASE, "analysis": {"confidence": 1.5}}, r"analysis.confidence: 1.5 is not in \(0, 1\)"),
    ({**BASE, "data": {"n": 3}, "analysis": {"unbiased": True}}, "need n >= 4, got 3"),
])  # fmt: skip
def test_zoo_config_values(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_job_config(raw, "zoo")


@pytest.mark.parametrize("panels, message", [
    (None, "give rows of"),
    ([["test_resnet"]], r"panels\[0\]\[0\]: give a pair"),
    (["test_resnet"], r"panels\[0\]: a row must be a list"),
])  # fmt: skip
def test_figure_panels(panels, message):
    with pytest.raises(ConfigError, match=message):
        parse_job_config({**BASE, "panels": panels}, "figure")


def test_set_into_a_value_that_is_not_a_section():
    with pytest.raises(ConfigError, match="--set weights.default: weights is not a section"):
        parse_job_config(BASE, "zoo", {"weights.default": "random"})


def test_figure_with_a_model_that_fails(tmp_path):
    raw = {**BASE, "models": ["test_resnet", "no_such_model_zz"], "panels": [[["test_resnet", "no_such_model_zz"]]]}
    with pytest.raises(CKAProbeError, match="model no_such_model_zz failed: unknown model"):
        make_figure(parse_job_config(raw, "figure"), progress=False, cache=tmp_path)


def test_zoo_summary_score(tmp_path):
    config = parse_job_config({**BASE, "output": {"summary_score": "median"}}, "zoo")
    with pytest.raises(ConfigError, match="output.summary_score: 'median'"):
        run_zoo(config, output_dir=tmp_path, progress=False)


def test_executor_errors(monkeypatch):
    with pytest.raises(CKAProbeError, match="unknown executor 'dask'"):
        features_for_models([], None, {}, executor="dask", progress=False)
    with pytest.raises(CKAProbeError, match="needs probe_spec"):
        features_for_models([], None, {}, executor="ray", progress=False)
    import builtins

    real_import = builtins.__import__

    def no_ray(name, *args, **kwargs):
        if name == "ray":
            raise ImportError("no ray")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_ray)
    with pytest.raises(CKAProbeError, match=r'Ray is not installed; pip install "cka-probe\[ray\]"'):
        multi_module.features_for_models([], None, {}, executor="ray", probe_spec={}, progress=False)


def test_heatmap_tick_labels():
    import pandas as pd

    from cka_probe.plots import plot_cka_heatmap

    with pytest.raises(CKAProbeError, match=r"^unknown axis labels 'numbers'; use --labels names, index, auto$"):
        plot_cka_heatmap(pd.DataFrame([[0.5]]), labels="numbers")
