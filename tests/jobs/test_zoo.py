"""Zoo jobs: one forward pass per model, all pairs from one product, failures recorded, resumable."""

from __future__ import annotations

import os

import numpy as np
import pandas as pd
import pytest
import timm
import torch

import cka_probe.engine.features as features_module
from cka_probe._files import check_output_name
from cka_probe.data import load_probe_set
from cka_probe.engine.cache import CacheCorruptWarning
from cka_probe.errors import OutputNameError, UnknownModelError
from cka_probe.jobs import ConfigError, parse_job_config, run_zoo
from cka_probe.jobs.result import output_paths
from cka_probe.jobs.summary import depth_correspondence, diagonal_band_mean

from ..math import reference

MODELS = ["test_resnet", "test_vit", {"name": "test_convnext", "family": "cnn"}, "test_efficientnet"]


def _config(models=MODELS, **extra):
    raw = {
        "weights": "random",
        "data": {"source": "embedded", "n": 12},
        "models": models,
        "output": {"per_pair": True},
        **extra,
    }
    return parse_job_config(raw, "zoo")


def _reference_features(name: str, n: int = 12) -> dict[str, np.ndarray]:
    """Float64 pooled activations of a seeded random timm model on the embedded probe set, with plain hooks.

    Written from timm's API and the recording rules, independently of the package's capture code: the
    model is built right after ``torch.manual_seed(0)`` (cka-probe's rule for random weights), images go
    through timm's own eval transform, every ``nn.ReLU`` / ``nn.GELU`` output is recorded in module order,
    and maps are averaged over space (NCHW) or over patch tokens, class token dropped (NLC).
    """
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))
    images = torch.stack([transform(image) for image in load_probe_set("embedded", n=n).images])
    outputs = {}
    names = [k for k, m in model.named_modules() if type(m) in (torch.nn.ReLU, torch.nn.GELU)]
    hooks = [
        model.get_submodule(k).register_forward_hook(lambda m, a, out, k=k: outputs.setdefault(k, out)) for k in names
    ]
    with torch.no_grad():
        model(images)
    for hook in hooks:
        hook.remove()
    pooled = {}
    for k in names:
        out = outputs[k].double()
        pooled[k] = (out.mean((2, 3)) if out.ndim == 4 else out[:, model.num_prefix_tokens :].mean(1)).numpy()
    return pooled


def test_one_forward_pass_per_model_and_pairs_equal_an_independent_computation(tmp_path, monkeypatch, forward_passes):
    calls = forward_passes
    result = run_zoo(_config(), output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert sorted(calls) == sorted(["test_resnet", "test_vit", "test_convnext", "test_efficientnet"])
    assert len(result.summary) == 6  # 4 models: every unordered pair once
    pair = result.long[(result.long.model_a == "test_resnet") & (result.long.model_b == "test_vit")]
    feats_a, feats_b = _reference_features("test_resnet"), _reference_features("test_vit")
    assert list(pair["layer_a"].unique()) == list(feats_a) and list(pair["layer_b"].unique()) == list(feats_b)
    expected = [reference.linear_cka(feats_a[a], feats_b[b]) for a in feats_a for b in feats_b]
    np.testing.assert_allclose(pair["cka"].to_numpy(), expected, rtol=1e-6)  # float32 features: 1e-7 seen
    row = result.summary.set_index(["model_a", "model_b"]).loc[("test_resnet", "test_convnext")]
    assert bool(row["homogeneous"]) and row["family_b"] == "cnn"
    for name in (
        "pairs_long.parquet",
        "pairs_long.csv",
        "pairs_summary.csv",
        "models.csv",
        "zoo_summary.png",
        "manifest.json",
        "pairs/test_resnet_vs_test_vit.png",
    ):
        assert (tmp_path / "out" / name).exists(), name
    assert result.manifest["complete"] and result.manifest["pairs"] == 6


def test_a_failing_model_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    real = features_module.model_features

    def fails_for_convnext(request, *args, **kwargs):  # a model that resolves but fails while it runs
        if request.display == "test_convnext":
            raise RuntimeError("CUDA out of memory while running test_convnext")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(features_module, "model_features", fails_for_convnext)
    result = run_zoo(
        _config(models=["test_resnet", "test_convnext", "test_vit"]),
        output_dir=tmp_path / "out",
        cache=tmp_path / "cache",
        progress=False,
    )
    models = result.models.set_index("label")
    assert models.loc["test_convnext", "status"] == "failed"
    assert "out of memory" in models.loc["test_convnext", "error"]
    assert list(result.summary[["model_a", "model_b"]].itertuples(index=False, name=None)) == [
        ("test_resnet", "test_vit")
    ]
    assert result.manifest["failures"][0]["label"] == "test_convnext"


def test_an_unknown_model_stops_the_zoo_before_any_model_runs(tmp_path, monkeypatch, forward_passes):
    calls = forward_passes
    with pytest.raises(UnknownModelError, match=r"model no_such_model_zz: unknown model 'no_such_model_zz'"):
        run_zoo(
            _config(models=["test_resnet", "test_vit", "no_such_model_zz"]),
            output_dir=tmp_path / "out",
            cache=tmp_path / "cache",
            progress=False,
        )
    assert calls == [] and not (tmp_path / "out").exists()


def test_killed_job_resumes_without_recomputing_and_matches_an_uninterrupted_run(tmp_path, monkeypatch, forward_passes):
    config = _config()
    reference = run_zoo(config, output_dir=tmp_path / "reference", cache=tmp_path / "ref-cache", progress=False)

    real = features_module.model_features
    seen = []

    def dies_on_third_model(request, *args, **kwargs):
        seen.append(request.display)
        if len(seen) == 3:
            raise KeyboardInterrupt  # the job is killed while the third model runs
        return real(request, *args, **kwargs)

    monkeypatch.setattr(features_module, "model_features", dies_on_third_model)
    with pytest.raises(KeyboardInterrupt):
        run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert not (tmp_path / "out" / "manifest.json").exists()
    monkeypatch.setattr(features_module, "model_features", real)

    forward_passes.clear()  # count the resumed run alone
    calls = forward_passes
    resumed = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert sorted(calls) == ["test_convnext", "test_efficientnet"]  # the two finished models were not rerun
    pd.testing.assert_frame_equal(resumed.long, reference.long)
    pd.testing.assert_frame_equal(resumed.summary, reference.summary)
    for name in ("pairs_long.csv", "pairs_summary.csv", "pairs/test_resnet_vs_test_vit.csv"):
        assert (tmp_path / "out" / name).read_bytes() == (tmp_path / "reference" / name).read_bytes(), name

    calls.clear()
    again = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert again.up_to_date and calls == []


def test_interrupted_pair_stage_is_reused(tmp_path, monkeypatch):
    config = _config(models=MODELS[:2])
    run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    (tmp_path / "out" / "manifest.json").unlink()  # as if killed while writing the outputs
    import cka_probe.jobs.zoo as zoo_module

    monkeypatch.setattr(zoo_module, "pair_tables", lambda *a, **k: pytest.fail("pairs recomputed"))
    resumed = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert not resumed.up_to_date and len(resumed.long) == 12 * 6


def test_output_of_another_configuration_is_refused(tmp_path):
    run_zoo(_config(models=MODELS[:2]), output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    other = _config(models=MODELS[:2], data={"source": "embedded", "n": 10})
    with pytest.raises(ConfigError, match="another configuration"):
        run_zoo(other, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    result = run_zoo(other, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False, overwrite=True)
    assert result.manifest["n"] == 10


def test_depth_correspondence_on_constructed_matrices():
    assert depth_correspondence(np.eye(6)) == pytest.approx(1.0)
    assert depth_correspondence(np.fliplr(np.eye(6))) < -0.4
    stretched = np.kron(np.eye(4), np.ones((3, 1)))  # 12 x 4: three layers of A per layer of B, in order
    # best matches sit within one twelfth of the other side's depth: 1 - 3 * (1/18 + 1/12) / 2 = 0.79
    assert depth_correspondence(stretched) == pytest.approx(1 - 1.5 * (1 / 18 + 1 / 12))
    last_column = np.zeros((8, 8))
    last_column[:, -1] = 1.0  # every layer of A best matches B's last layer
    assert depth_correspondence(last_column) < 0.5
    rng = np.random.default_rng(0)
    random_scores = [depth_correspondence(rng.random((30, 30))) for _ in range(50)]
    assert abs(np.mean(random_scores)) < 0.1  # chance level is 0
    # A row of NaN (a constant layer of A) drops out of A's side and its cells out of B's side, while every
    # layer keeps its relative depth (i + 1/2) / 5. Row side: rows 0, 1, 3, 4 best match their own column
    # (gap 0). Column side: column 2's best live row is 4 (0.3), |0.5 - 0.9| = 0.4, the others match (gap 0),
    # mean 0.4 / 5 = 0.08. DC = 1 - 3 * (0 + 0.08) / 2 = 0.88.
    with_nan = np.eye(5)
    with_nan[4, 2] = 0.3
    with_nan[2] = np.nan
    assert depth_correspondence(with_nan) == pytest.approx(0.88, abs=1e-12)


def test_statistics_in_the_long_table(tmp_path):
    from cka_probe.data import load_probe_set
    from cka_probe.engine.features import FeatureSettings, ModelRequest, model_features
    from cka_probe.math import bootstrap_ci, permutation_test

    config = _config(models=MODELS[:2], analysis={"permutations": 30, "bootstrap": 20, "stats_seed": 3})
    result = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    long = result.long
    assert {"p_value", "ci_low", "ci_high"} <= set(long.columns) and "significant_share" in result.summary
    probe = load_probe_set("embedded", n=12)
    feats = [
        model_features(
            ModelRequest(name, weights="random"), probe, FeatureSettings(), cache=None, progress=False
        ).features
        for name in ("test_resnet", "test_vit")
    ]
    p_values = permutation_test(feats[0], feats[1], num_permutations=30, seed=3)
    low, high = bootstrap_ci(feats[0], feats[1], num_resamples=20, seed=3)
    np.testing.assert_allclose(long["p_value"].to_numpy(), p_values.values.numpy().ravel())
    np.testing.assert_allclose(long["ci_low"].to_numpy(), low.values.numpy().ravel())
    np.testing.assert_allclose(long["ci_high"].to_numpy(), high.values.numpy().ravel())
    assert ((long["p_value"] >= 1 / 31) & (long["p_value"] <= 1)).all()
    # The pair scores' intervals: each of the same 20 resamples of the images, scored whole, by hand.
    from cka_probe.math.resampling import _resample_indices

    matrices = []
    for idx in _resample_indices(12, 20, 3):
        rows = [value[idx].double().numpy() for value in feats[0].values()]
        cols = [value[idx].double().numpy() for value in feats[1].values()]
        matrices.append([[reference.linear_cka(x, y) for y in cols] for x in rows])
    pair = result.summary[(result.summary.model_a == "test_resnet") & (result.summary.model_b == "test_vit")].iloc[0]
    for score, function in (("diagonal_band_cka", diagonal_band_mean), ("depth_correspondence", depth_correspondence)):
        expected = np.quantile([function(np.array(m)) for m in matrices], [0.025, 0.975])
        assert (pair[f"{score}_low"], pair[f"{score}_high"]) == pytest.approx(tuple(expected), abs=1e-9)
        assert pair[f"{score}_low"] <= pair[score] + 0.05 and pair[f"{score}_low"] < pair[f"{score}_high"]
    again = run_zoo(config, output_dir=tmp_path / "again", cache=tmp_path / "cache", progress=False)
    pd.testing.assert_frame_equal(again.long, long)  # seeded: reproducible


# --------------------------------------------------------------------------- output names


def test_labels_that_give_one_file_name_are_refused_before_any_model_runs(tmp_path, monkeypatch, forward_passes):
    calls = forward_passes
    models = [{"name": "test_resnet", "label": "net/a"}, {"name": "test_vit", "label": "net_a"}, "test_convnext"]
    with pytest.raises(OutputNameError) as info:
        run_zoo(_config(models=models), output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    message = str(info.value)
    assert "\n" not in message and "'net/a'" in message and "'net_a'" in message and "label:" in message
    assert calls == [] and not (tmp_path / "cache").exists() and not (tmp_path / "out").exists()


def test_labels_that_differ_only_in_case_are_refused(tmp_path):
    models = [{"name": "test_resnet", "label": "Net"}, {"name": "test_vit", "label": "net"}]
    with pytest.raises(OutputNameError, match="'Net' and 'net'"):
        run_zoo(_config(models=models), output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)


@pytest.mark.parametrize("name", ["../../x", "sub/x", "..", ""])
def test_output_names_that_leave_their_folder_are_refused(tmp_path, name):
    with pytest.raises(OutputNameError, match="not a plain file name") as info:
        check_output_name(name, "output.name")
    assert "\n" not in str(info.value) and "output.name" in str(info.value)
    with pytest.raises(OutputNameError):
        output_paths(tmp_path / "out", name)  # what compare and CKAResult.save(stem=...) write through
    assert not (tmp_path.parent / "x.csv").exists()


def test_a_rerun_after_editing_the_images_computes_everything_again(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    raw = {
        "weights": "random",
        "data": {"source": str(folder), "n": 8},
        "models": MODELS[:2],
        "output": {"per_pair": True},
    }
    config = parse_job_config(raw, "zoo")
    first = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False).up_to_date
    pair_file = tmp_path / "out" / "pairs" / "test_resnet_vs_test_vit.csv"
    before = pair_file.read_bytes()
    for path in sorted(folder.iterdir()):  # new pixels, same names and modification times
        stat = path.stat()
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edited = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert not edited.up_to_date and not edited.models["from_cache"].any()
    assert not np.allclose(edited.long["cka"], first.long["cka"])
    fresh = run_zoo(config, output_dir=tmp_path / "fresh", cache=False, progress=False)
    pd.testing.assert_frame_equal(edited.long, fresh.long)
    assert pair_file.read_bytes() != before
    assert pair_file.read_bytes() == (tmp_path / "fresh" / "pairs" / "test_resnet_vs_test_vit.csv").read_bytes()


def _after_pair_stage(tmp_path):
    """A complete two-model zoo, then its outputs and manifest removed: what a kill after the pair stage leaves."""
    config = _config(models=MODELS[:2])
    reference = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    for path in sorted((tmp_path / "out").rglob("*"), reverse=True):
        if ".zoo-state" not in path.parts:
            path.rmdir() if path.is_dir() else path.unlink()
    return config, reference


def _flip_middle_bytes(path):
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    for i in range(middle, middle + 4):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def _rewrite_one_value(path):
    table = pd.read_parquet(path)
    table.loc[3, "cka"] = 0.123456789
    table.to_parquet(path, index=False)  # a valid table: only the hash tells it from the one written


@pytest.mark.parametrize("damage", [_flip_middle_bytes, _rewrite_one_value], ids=["flipped-bytes", "one-value"])
def test_a_damaged_saved_pair_table_is_recomputed_with_a_warning(tmp_path, damage):
    config, reference = _after_pair_stage(tmp_path)
    damage(tmp_path / "out" / ".zoo-state" / "pairs.parquet")
    with pytest.warns(CacheCorruptWarning, match="saved pair table .*pairs.parquet is not used: its bytes differ"):
        rerun = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    pd.testing.assert_frame_equal(rerun.long, reference.long)
    served = pd.read_csv(tmp_path / "out" / "pairs_long.csv")
    np.testing.assert_allclose(served["cka"], reference.long["cka"], rtol=1e-9)
    assert served["cka"].between(-1e-9, 1 + 1e-9).all()
    again = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    assert again.up_to_date  # the recomputed table was saved again with its hash


def test_a_saved_pair_table_without_a_recorded_hash_is_recomputed(tmp_path):
    import json

    config, reference = _after_pair_stage(tmp_path)
    meta_path = tmp_path / "out" / ".zoo-state" / "pairs.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({"stage_key": meta["stage_key"], "config_sha256": meta["config_sha256"]}))
    with pytest.warns(CacheCorruptWarning, match="no recorded SHA-256"):
        rerun = run_zoo(config, output_dir=tmp_path / "out", cache=tmp_path / "cache", progress=False)
    pd.testing.assert_frame_equal(rerun.long, reference.long)


def test_per_pair_and_summary_figures_name_the_settings_that_differ_from_b1(tmp_path, monkeypatch):
    import cka_probe.plots as plots

    said = []
    for name in ("plot_cka_heatmap", "plot_pair_scores"):
        real = getattr(plots, name)

        def spy(*args, _real=real, **kwargs):
            said.append(kwargs.get("subtitle"))
            return _real(*args, **kwargs)

        monkeypatch.setattr(plots, name, spy)
    raw = {
        "weights": "random",
        "data": {"source": "synthetic", "n": 8, "batch_size": 4},
        "analysis": {"pool": "max", "estimator": "minibatch", "tokens": "all"},
        "models": ["test_resnet", "test_vit"],
        "output": {"per_pair": True, "formats": ["png"]},
    }
    run_zoo(parse_job_config(raw, "zoo"), output_dir=tmp_path / "out", cache=False, progress=False)
    expected = (
        "random weights (seed 0) · synthetic images · n=8 · max pooling · minibatch estimator, batches of 4 · "
        "tokens all"
    )
    assert said == [expected, expected]  # the summary, then the one pair's heatmap
