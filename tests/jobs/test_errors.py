"""The one-line errors of the analysis layer and of its plots, each with the message it promises."""

from __future__ import annotations

import pytest
import torch

import cka_probe.engine.executors as executors_module
from cka_probe.engine.executors import features_for_models
from cka_probe.errors import CKAProbeError, ShapeError
from cka_probe.jobs import ConfigError, compare, make_figure, parse_job_config
from cka_probe.jobs.result import output_paths

BASE = {"weights": "random", "data": {"source": "synthetic", "n": 8}, "models": ["test_resnet", "test_vit"]}


def _compare(data="synthetic", **kwargs):
    return compare(
        "test_resnet", "test_vit", data, weights="random", progress=False, device="cpu", cache=False, **kwargs
    )


@pytest.mark.parametrize("kwargs, message", [
    ({"n": 8, "estimator": "exact"}, "unknown estimator 'exact'; choose --estimator full or minibatch"),
    ({"n": 8, "estimator": "auto"}, "unknown estimator 'auto'"),
    ({"n": 8, "tokens": "first"}, "unknown token rule 'first'; choose --tokens"),
    ({"n": 8, "tokens_b": "first"}, "unknown token rule 'first'"),
    ({"n": 1}, "n=1 images cannot give a CKA"),
    ({"n": 8, "batch_size": 0}, "--batch-size must be a positive number of images, got 0"),
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
    with pytest.raises(ConfigError, match=r"output.formats\[0\]: input should be 'png', 'pdf' or 'svg' \(got 'bmp'\)"):
        parse_job_config({**BASE, "panels": [[["test_resnet", "test_vit"]]], "output": {"formats": ["bmp"]}}, "figure")
    figure = parse_job_config(
        {**BASE, "panels": [[["test_resnet", "test_vit"]]], "output": {"formats": "png,svg"}}, "figure"
    )
    assert figure.output.formats == ["png", "svg"]  # a string is a comma-separated list, never letters


@pytest.mark.parametrize("raw, message", [
    ([1, 2], "must be a mapping of sections"),
    ({**BASE, "weights": "imagenet"}, "weights: input should be 'pretrained' or 'random' \\(got 'imagenet'\\)"),
    ({**BASE, "models": []}, "models: list should have at least 1 item"),
    ({**BASE, "models": [{"label": "x"}]}, r"models\[0\].name is missing"),
    ({**BASE, "models": [{"name": "test_vit", "weights": "best"}]}, r"models\[0\].weights: .*\(got 'best'\)"),
    ({**BASE, "data": "embedded"}, "data: input should be a valid dictionary \\(got 'embedded'\\)"),
    ({**BASE, "data": {"n": 1}}, "data.n: input should be greater than or equal to 2 \\(got 1\\)"),
    ({**BASE, "analysis": {"tokens": "first"}}, "analysis.tokens: .*\\(got 'first'\\)"),
    ({**BASE, "analysis": {"permutations": -1}}, "analysis.permutations: input should be greater than or equal to 0 \\(got -1\\)"),
    ({**BASE, "analysis": {"confidence": 1.5}}, r"analysis.confidence: input should be less than 1 \(got 1.5\)"),
    ({**BASE, "data": {"n": 3}, "analysis": {"permutations": 10}}, "need n >= 4, got 3"),
    ({**BASE, "data": {"seed": 1.7}}, r"data.seed: input should be a valid integer \(got 1.7\)"),
    ({**BASE, "data": {"batch_size": 0}}, r"data.batch_size: input should be greater than or equal to 1"),
    ({**BASE, "analysis": {"estimator": "minibatch", "permutations": 5}}, "set analysis.estimator: full"),
    ({**BASE, "models": ["test_vit", "test_vit"]}, "label 'test_vit' is used twice"),
])  # fmt: skip
def test_zoo_config_values(raw, message):
    with pytest.raises(ConfigError, match=message):
        parse_job_config(raw, "zoo")


@pytest.mark.parametrize("data, analysis, error, message", [
    ({"n": 3}, {"unbiased": True}, ShapeError, "the unbiased estimator needs n >= 4 images, got n=3; raise data.n or drop analysis.unbiased$"),
    ({"n": 8, "batch_size": 3}, {"estimator": "minibatch"}, ShapeError, "the minibatch estimator needs batches of 4 or more images, got data.batch_size: 3$"),
    ({}, {"estimator": "minibatch", "precision": "float32"}, ConfigError, "analysis.precision: float32 applies to the full estimator; use analysis.estimator: full or analysis.precision: float64$"),
    ({"n": 8, "batch_size": 4}, {"pool": "flatten"}, ConfigError, "analysis.pool: flatten with analysis.estimator: full needs all n=8 images in one forward batch, got data.batch_size: 4; drop data.batch_size"),
])  # fmt: skip
def test_job_files_get_compares_check_in_their_own_keys(data, analysis, error, message):
    """One check of the CKA settings (CKASettings.check, check_pooling) on every path: a job file's mistake
    has the error type compare's has, and its message names the file's keys."""
    raw = {**BASE, "data": {**BASE.get("data", {}), **data}, "analysis": analysis}
    with pytest.raises(error, match="^zoo config: " + message):
        parse_job_config(raw, "zoo")
    cli_kwargs = {**data, **{k: v for k, v in analysis.items()}}
    cli_kwargs.setdefault("n", 128)
    with pytest.raises(error):
        _compare(**cli_kwargs)


@pytest.mark.parametrize("panels, message", [
    (None, "panels: input should be a valid list"),
    ([["test_resnet"]], r"panels\[0\]\[0\]: input should be a valid list \(got 'test_resnet'\)"),
    (["test_resnet"], r"panels\[0\]: input should be a valid list"),
])  # fmt: skip
def test_figure_panels(panels, message):
    with pytest.raises(ConfigError, match=message):
        parse_job_config({**BASE, "panels": panels}, "figure")


def test_set_into_a_value_that_is_not_a_section():
    with pytest.raises(ConfigError, match="--set weights.default: weights is not a section"):
        parse_job_config(BASE, "zoo", {"weights.default": "random"})


def test_figure_with_a_model_that_fails(tmp_path):
    raw = {**BASE, "models": ["test_resnet", "no_such_model_zz"], "panels": [[["test_resnet", "no_such_model_zz"]]]}
    with pytest.raises(CKAProbeError, match="figure config: model no_such_model_zz: unknown model"):
        make_figure(parse_job_config(raw, "figure"), progress=False, cache=tmp_path)


def test_zoo_summary_score(tmp_path):
    with pytest.raises(ConfigError, match=r"output.summary_score: .*\(got 'median'\)"):
        parse_job_config({**BASE, "output": {"summary_score": "median"}}, "zoo")


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
        executors_module.features_for_models([], None, {}, executor="ray", probe_spec={}, progress=False)


def test_heatmap_tick_labels():
    import pandas as pd

    from cka_probe.plots import plot_cka_heatmap

    with pytest.raises(CKAProbeError, match=r"^unknown axis labels 'numbers'; use --labels auto, names, index$"):
        plot_cka_heatmap(pd.DataFrame([[0.5]]), labels="numbers")
