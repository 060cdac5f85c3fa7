"""identify: CKA matrices and identification counts against NumPy references on stored activations; inputs and errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import timm.models
import torch
from torch import nn

from cka_probe.data import batches, load_probe_set
from cka_probe.errors import ConfigError, IdentifyError, OutputExistsError
from cka_probe.jobs.identify import (
    identification_scores,
    identify,
    load_identify_config,
    parse_identify_config,
    resolve_networks,
)
from cka_probe.models import load_model, transform_for

from ..tiny_models import register_tiny


class TinyCNN(nn.Module):
    def __init__(self, widths=(4, 6, 8)):
        super().__init__()
        layers, channels = [], 3
        for i, width in enumerate(widths):
            layers += [nn.Conv2d(channels, width, 3, 1 + (i > 0), 1), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)
        self.fc = nn.Linear(channels, 5)

    def forward(self, x):
        return self.fc(self.features(x).mean((2, 3)))


def _register(name, widths):
    return register_tiny(name, lambda: TinyCNN(widths))


TINY = _register("identify_test_tiny", (4, 6, 8))
DEEPER = _register("identify_test_deeper", (4, 6, 8, 8))


@pytest.fixture
def checkpoints(tmp_path):
    paths = []
    for seed in range(3):
        torch.manual_seed(seed)
        path = tmp_path / f"seed{seed}.pth"
        torch.save(timm.models.create_model(TINY).state_dict(), path)
        paths.append(str(path))
    return paths


# --------------------------------------------------------------------------- NumPy references


def _stored_activations(checkpoint, n, batch_size):
    """Raw ReLU outputs of one network on the probe images, recorded with plain hooks, per batch."""
    loaded = load_model(TINY, checkpoint=checkpoint)
    outputs = {name: [] for name in ("features.1", "features.3", "features.5")}
    handles = [
        loaded.model.get_submodule(name).register_forward_hook(
            lambda m, a, out, name=name: outputs[name].append(out.detach().double().numpy())
        )
        for name in outputs
    ]
    with torch.no_grad():
        for images, _ in batches(load_probe_set("synthetic", n=n, seed=0), transform_for(loaded), batch_size):
            loaded.model(images)
    for handle in handles:
        handle.remove()
    return outputs


def _linear_cka(x, y):
    xc, yc = x - x.mean(0), y - y.mean(0)
    return np.linalg.norm(yc.T @ xc) ** 2 / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc))


def _hsic1(k, l_):
    """Song et al. 2012, eq. 5."""
    n = len(k)
    k, l_ = k - np.diag(np.diag(k)), l_ - np.diag(np.diag(l_))
    one = np.ones(n)
    value = np.trace(k @ l_) + one @ k @ one * (one @ l_ @ one) / ((n - 1) * (n - 2)) - 2 / (n - 2) * one @ k @ l_ @ one
    return value / (n * (n - 3))


def _minibatch_cka(xs, ys):
    xy = sum(_hsic1(x @ x.T, y @ y.T) for x, y in zip(xs, ys))
    xx = sum(_hsic1(x @ x.T, x @ x.T) for x in xs)
    yy = sum(_hsic1(y @ y.T, y @ y.T) for y in ys)
    return xy / np.sqrt(xx * yy)


def _features(outputs, pool):
    if pool == "flatten":
        return {k: [b.reshape(len(b), -1) for b in v] for k, v in outputs.items()}
    return {k: [b.mean((2, 3)) for b in v] for k, v in outputs.items()}


def _reference_counts(matrices):
    """Count, per layer, the ordered pairs whose row maximum is the diagonal (strictly)."""
    counts = np.zeros(len(next(iter(matrices.values()))), dtype=int)
    for m in matrices.values():
        for mat in (m, m.T):
            for row in range(len(mat)):
                others = [mat[row, c] for c in range(len(mat)) if c != row]
                counts[row] += mat[row, row] > max(others)
    return counts


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize(("batch_size", "estimator"), [(None, "full"), (8, "minibatch")])
def test_matrices_and_counts_match_numpy_on_stored_activations(checkpoints, batch_size, estimator, one_thread):
    n = 24
    result = identify(TINY, checkpoints, "synthetic", n=n, batch_size=batch_size, estimator=estimator, progress=False)
    assert result.metadata["estimator"] == estimator
    stored = [_stored_activations(c, n, batch_size or n) for c in checkpoints]
    for pool, rtol in (("flatten", 1e-9), ("mean", 1e-6)):  # mean: features pooled in float32
        feats = [_features(s, pool) for s in stored]
        names = list(feats[0])
        reference = {}
        for i in range(3):
            for j in range(i + 1, 3):
                if estimator == "full":
                    ref = [[_linear_cka(feats[i][a][0], feats[j][b][0]) for b in names] for a in names]
                else:
                    ref = [[_minibatch_cka(feats[i][a], feats[j][b]) for b in names] for a in names]
                reference[(i, j)] = np.array(ref)
                np.testing.assert_allclose(result.matrices[pool][(i, j)], reference[(i, j)], rtol=rtol)
        counts = _reference_counts(reference)
        table = result.table[result.table.pooling == pool]
        assert table["identified"].tolist() == counts.tolist()
        assert table["layer"].tolist() == names and (table["comparisons"] == 6).all()
        assert result.overall[pool]["identified"] == counts.sum() and result.overall[pool]["comparisons"] == 18
    widths = result.table[result.table.pooling == "flatten"]["width"].tolist()
    assert widths == [4 * 12 * 12, 6 * 6 * 6, 8 * 3 * 3]


def test_float32_precision_reaches_the_flattened_grams_and_stays_within_1e6(checkpoints, one_thread):
    n = 24
    result = identify(TINY, checkpoints, "synthetic", n=n, precision="float32", progress=False)
    assert result.metadata["precision"] == "float32" and "flattened Grams float32" in result.metadata["dtype"]
    stored = [_stored_activations(c, n, n) for c in checkpoints]
    for pool in ("flatten", "mean"):
        feats = [_features(s, pool) for s in stored]
        names = list(feats[0])
        for i, j in ((0, 1), (0, 2), (1, 2)):
            reference = np.array([[_linear_cka(feats[i][a][0], feats[j][b][0]) for b in names] for a in names])
            np.testing.assert_allclose(result.matrices[pool][(i, j)], reference, rtol=0, atol=1e-6)
    with pytest.raises(ConfigError, match="--precision float32 applies to the full estimator"):
        identify(TINY, checkpoints, "synthetic", n=16, batch_size=8, estimator="minibatch", precision="float32")


def test_the_hooks_form_float32_grams_when_asked(checkpoints, monkeypatch, one_thread):
    from cka_probe.engine import features as features_module

    seen = []
    original = features_module.FeatureRecorder

    def recording(*args, **kwargs):
        seen.append((kwargs["pool"], kwargs.get("precision")))
        return original(*args, **kwargs)

    monkeypatch.setattr(features_module, "FeatureRecorder", recording)
    identify(TINY, checkpoints[:2], "synthetic", n=8, precision="float32", progress=False)
    assert ("flatten", "float32") in seen


def test_identify_records_every_pooling_in_one_pass_of_the_shared_path(checkpoints, monkeypatch, one_thread):
    from cka_probe.engine import features as features_module
    from cka_probe.jobs import identify as identify_module

    passes = []
    original = features_module.extract_poolings

    def counting(model, batches, pools, **kwargs):
        passes.append(tuple(pools))
        return original(model, batches, pools, **kwargs)

    monkeypatch.setattr(features_module, "extract_poolings", counting)
    monkeypatch.setattr(identify_module, "extract_poolings", counting)
    result = identify(TINY, checkpoints, "synthetic", n=8, progress=False)
    assert passes == [("mean", "flatten")] * len(checkpoints)  # one forward pass per network, both poolings
    facts = result.metadata["layers"]["seed0.pth"]
    assert [fact["name"] for fact in facts] == list(result.table["layer"].unique())
    assert {"layout_rule", "pooled_dim"} <= set(facts[0])  # compare's layer_provenance, not a copy of it


def test_several_poolings_in_one_pass_equal_separate_passes(one_thread):
    from cka_probe.engine.features import extract_features, extract_poolings

    torch.manual_seed(0)
    model = timm.create_model(TINY).eval()
    images = [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(s)) for s in (1, 2)]
    together = extract_poolings(model, images, ["mean", "max", "flatten"], progress=False)
    for pool in ("mean", "max", "flatten"):
        alone = extract_features(model, images, pool=pool, progress=False)
        assert together[pool].n == alone.n == 8
        assert list(together[pool].features) == list(alone.features)
        for name, value in alone.features.items():
            mine = together[pool].features[name]
            pairs = zip(mine, value) if isinstance(value, list) else [(mine, value)]
            assert all(torch.equal(a, b) for a, b in pairs), (pool, name)


def test_identification_scores_count_ties_and_nan_as_misses():
    m01 = np.array([[0.9, 0.1, 0.2], [0.3, 0.5, 0.5], [0.1, 0.2, np.nan]])
    m02 = np.eye(3)
    m12 = np.array([[0.8, 0.9, 0.0], [0.1, 0.7, 0.2], [0.0, 0.1, 0.6]])
    counts = identification_scores({(0, 1): m01, (0, 2): m02, (1, 2): m12}, 3)
    assert counts.tolist() == [5, 4, 4]


class JitteredPool(nn.Module):
    """Global average pool with each channel scaled by 1 + O(1e-7): the spatial mean of its input, as float rounding
    might leave it when the mean is taken two ways (see the test below)."""

    def __init__(self, channels: int):
        super().__init__()
        jitter = 1 + 4e-7 * torch.randn(channels, generator=torch.Generator().manual_seed(0))
        self.register_buffer("jitter", jitter.view(1, channels, 1, 1), persistent=False)

    def forward(self, x):
        return x.mean((2, 3), keepdim=True) * self.jitter


class PooledCNN(TinyCNN):
    """TinyCNN with its global average pool as a module, whose output is (nearly) the spatial mean of features.5."""

    def __init__(self):
        super().__init__()
        self.pool = JitteredPool(8)

    def forward(self, x):
        return self.fc(self.pool(self.features(x)).flatten(1))


POOLED = register_tiny("identify_test_pooled", PooledCNN)


def test_a_duplicated_layer_is_a_miss_whichever_way_rounding_falls(tmp_path):
    # Mean-pooled, the last ReLU and the pool's output are the same numbers up to rounding-sized changes: their CKA
    # values differ by about 1e-7, so neither layer can be identified (TIE_TOLERANCE), in float64 and float32.
    # (With no tolerance one of the two wins wherever the jitter favours it.)
    paths = []
    for seed in range(4):
        torch.manual_seed(seed)
        paths.append(str(tmp_path / f"pooled{seed}.pth"))
        torch.save(timm.models.create_model(POOLED).state_dict(), paths[-1])
    for precision in ("float64", "float32"):
        result = identify(
            POOLED,
            paths,
            "synthetic",
            n=16,
            layers=["features.1", "features.5", "pool"],
            pools=("mean",),
            precision=precision,
            progress=False,
        )
        shares = dict(zip(result.table.layer, result.table.share))
        assert shares["features.5"] == 0 and shares["pool"] == 0
        matrix = result.matrices["mean"][(0, 1)]
        assert 0 < abs(matrix[1, 1] - matrix[1, 2]) < 1e-6  # the near-tie the tolerance exists for


def test_summary_line_and_saved_provenance(checkpoints, tmp_path, one_thread):
    result = identify(TINY, checkpoints, "synthetic", n=8, progress=False)
    line = result.summary_line()
    assert line.startswith("mean ") and ", flatten " in line and line.endswith("of 18 layer matches")
    paths = result.save(tmp_path / "out", formats=("png",))
    record = json.loads(paths["json"].read_text())
    for key in ("networks", "data", "n", "seed", "layers", "pooling", "estimator", "versions", "best_matches"):
        assert key in record
    assert [net["checkpoint_sha256"] for net in record["networks"]] == [
        load_model(TINY, checkpoint=c).checkpoint_sha256 for c in checkpoints
    ]
    assert record["pools"] == ["mean", "flatten"] and paths["png"].stat().st_size > 0
    assert len(paths["csv"].read_text().splitlines()) == 1 + 2 * 3
    with pytest.raises(OutputExistsError, match="--overwrite"):
        result.save(tmp_path / "out", formats=("png",))


# --------------------------------------------------------------------------- inputs and errors


def test_globs_expand_sorted_and_labels_are_file_names(checkpoints, tmp_path):
    networks = resolve_networks(TINY, [str(tmp_path / "seed*.pth")])
    assert [n.label for n in networks] == ["seed0.pth", "seed1.pth", "seed2.pth"]


def test_fewer_than_two_checkpoints(checkpoints):
    with pytest.raises(IdentifyError, match="at least two checkpoints"):
        resolve_networks(TINY, checkpoints[:1])


def test_different_architectures_by_name_and_by_weights(checkpoints, tmp_path):
    with pytest.raises(IdentifyError, match="different architectures"):
        resolve_networks(TINY, [checkpoints[0], {"checkpoint": checkpoints[1], "model": DEEPER}])
    deeper = tmp_path / "deeper.pth"
    torch.save(timm.models.create_model(DEEPER).state_dict(), deeper)
    with pytest.raises(IdentifyError, match="does not fit identify_test_tiny: 0 missing and 2 unexpected"):
        identify(TINY, [checkpoints[0], str(deeper)], "synthetic", n=8, progress=False)


def test_layer_lists_that_differ(checkpoints):
    entries = [checkpoints[0], {"checkpoint": checkpoints[1], "layers": ["features.1", "features.5"]}]
    with pytest.raises(IdentifyError, match="layer lists differ between checkpoints"):
        identify(TINY, entries, "synthetic", n=8, progress=False)


def test_flatten_full_estimator_needs_one_batch(checkpoints):
    with pytest.raises(ConfigError, match="--pool flatten with --estimator full needs all n=16 images"):
        identify(TINY, checkpoints, "synthetic", n=16, batch_size=8, estimator="full", progress=False)
    # the same check in a file's keys, before any model runs
    raw = {"checkpoints": checkpoints, "data": {"source": "synthetic", "n": 16, "batch_size": 8}}
    with pytest.raises(ConfigError, match="^f.yaml: analysis.pools: flatten with analysis.estimator: full needs all"):
        parse_identify_config(raw, source="f.yaml")


def test_config_file(tmp_path, checkpoints):
    config = tmp_path / "identify.yaml"
    config.write_text(
        f"model: {TINY}\ncheckpoints: ['{tmp_path}/seed*.pth']\ndata: {{source: synthetic, n: 8}}\n"
        "analysis: {pools: [flatten]}\n"
    )
    settings = load_identify_config(config)
    assert settings["n"] == 8 and settings["pools"] == ("flatten",) and settings["data"] == "synthetic"
    assert settings["precision"] == "float64"
    config.write_text("model: x\ncheckpoints: []\nanalysis: {pool: mean}\n")
    with pytest.raises(ConfigError, match="unknown key 'analysis.pool'"):
        load_identify_config(config)


def test_pooling_study_margins_against_hand_computed_values():
    # scripts/pooling_study.py's margins: corresponding-layer CKA minus the best other layer's, averaged over the
    # ordered network pairs (the pair (j, i) reads the transpose), and the corresponding-layer CKA's spread.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[2] / "scripts" / "pooling_study.py"
    spec = importlib.util.spec_from_file_location("pooling_study", path)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    m01 = np.array([[0.9, 0.7], [0.8, 0.6]])
    m02 = np.array([[0.5, 0.1], [0.3, 0.8]])
    m12 = np.array([[0.7, 0.2], [0.4, 0.4]])
    out = study.margins({(0, 1): m01, (0, 2): m02, (1, 2): m12}, 3)
    # ordered pairs: m01, m02, m12 and their transposes; averages of the diagonal and of the off-diagonal cells
    diagonal = np.array([0.9 + 0.5 + 0.7, 0.6 + 0.8 + 0.4]) * 2 / 6
    upper = (0.7 + 0.1 + 0.2 + 0.8 + 0.3 + 0.4) / 6  # cell (0, 1): m[0, 1] of each pair, m[1, 0] of each transpose
    assert out["margin"] == pytest.approx(np.round(diagonal - [upper, upper], 3).tolist())
    assert out["spread"] == pytest.approx(np.round([np.std([0.9, 0.5, 0.7]), np.std([0.6, 0.8, 0.4])], 3).tolist())
