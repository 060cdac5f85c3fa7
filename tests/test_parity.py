"""One number per question: one pair of models gives the same table through every path.

The paths are ``cka-probe compare`` (command line), ``cka_probe.compare`` (Python), ``cka-probe figure``
and ``cka-probe zoo``, each with the feature cache cold and warm, for batches as large as n and
smaller, with the full and the minibatch estimator. The full estimator's tables are also checked
against the CKA computed here from features recorded by plain hooks, so the paths cannot all agree on
a wrong number.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from click.testing import CliRunner

import cka_probe
from cka_probe.cli.main import main

from .math.reference import linear_cka as linear_cka_np
from .math.reference import minibatch_cka as minibatch_cka_np

N = 12
MODELS = ("test_resnet", "test_vit")


def _cli(*args) -> None:
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert result.exit_code == 0, result.output


def _via_cli_compare(tmp_path, cache, batch_size, estimator, pool, precision):
    out = tmp_path / f"compare_{pool}_{batch_size}_{estimator}_{precision}"
    _cli(
        "compare",
        *MODELS,
        "--weights",
        "random",
        "-n",
        N,
        "--batch-size",
        batch_size,
        "--estimator",
        estimator,
        "--pool",
        pool,
        "--precision",
        precision,
        "--out",
        out,
        "--cache-dir",
        cache,
        "--no-progress",
        "--device",
        "cpu",
    )
    return pd.read_csv(out / "test_resnet_vs_test_vit.csv", index_col=0)


def _via_python(cache, batch_size, estimator, pool, precision):
    result = cka_probe.compare(
        *MODELS,
        "embedded",
        n=N,
        batch_size=batch_size,
        weights="random",
        estimator=estimator,
        pool=pool,
        precision=precision,
        cache=cache,
        progress=False,
        device="cpu",
    )
    assert result.metadata["estimator"] == estimator and result.metadata["precision"] == precision
    return result.matrix


def _job(tmp_path, kind, batch_size, estimator, pool, precision):
    config = {
        "weights": "random",
        "data": {"source": "embedded", "n": N, "batch_size": batch_size},
        "analysis": {"estimator": estimator, "device": "cpu", "pool": pool, "precision": precision},
        "models": [{"name": name, "label": name} for name in MODELS],
    }
    if kind == "figure":
        config["panels"] = [[list(MODELS)]]
        config["output"] = {"name": "pair", "formats": ["png"]}
    path = tmp_path / f"{kind}_{pool}_{batch_size}_{estimator}_{precision}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _matrix_from_long(long: pd.DataFrame) -> pd.DataFrame:
    frame = long[(long.model_a == MODELS[0]) & (long.model_b == MODELS[1])]
    matrix = frame.pivot(index="layer_a", columns="layer_b", values="cka")
    return matrix.loc[frame["layer_a"].unique(), frame["layer_b"].unique()]


def _run_job(kind, tmp_path, cache, batch_size, estimator, pool, precision):
    """``cka-probe figure|zoo JOB`` into its own folder, which is returned."""
    out = tmp_path / f"{kind}_{pool}_{batch_size}_{estimator}_{precision}"
    job = _job(tmp_path, kind, batch_size, estimator, pool, precision)
    _cli(kind, job, "--out", out, "--cache-dir", cache, "--no-progress")
    return out


def _via_figure(tmp_path, cache, *settings):
    out = _run_job("figure", tmp_path, cache, *settings)
    meta = json.loads((out / "pair.json").read_text())
    _, estimator, _, precision = settings
    assert meta["estimator"] == estimator and meta["estimator_description"] and meta["precision"] == precision
    return _matrix_from_long(pd.read_csv(out / "pair_panels.csv"))


def _via_zoo(tmp_path, cache, *settings):
    out = _run_job("zoo", tmp_path, cache, *settings)
    meta = json.loads((out / "manifest.json").read_text())
    _, estimator, _, precision = settings
    assert meta["estimator"] == estimator and meta["estimator_description"] and meta["precision"] == precision
    return _matrix_from_long(pd.read_csv(out / "pairs_long.csv"))


def _hooked_features(name: str, pool: str = "mean") -> dict[str, np.ndarray]:
    """Features recorded with plain hooks, pooled (or flattened) as the models' source lays them out."""
    from cka_probe.data import batches, load_probe_set
    from cka_probe.models import load_model, transform_for

    loaded = load_model(name, weights="random", seed=0)
    images = torch.cat([x for x, _ in batches(load_probe_set("embedded", n=N, seed=0), transform_for(loaded), N)])
    model = loaded.model.eval()
    records: dict[str, np.ndarray] = {}

    def hook(key):
        def fn(module, args, output):
            if output.ndim == 3:  # ViT tokens: patch tokens only, the class token left out
                output = output[:, model.num_prefix_tokens :]
                output = output.transpose(1, 2)  # (n, C, T), channels first like a map
            spatial = tuple(range(2, output.ndim))
            pooled = output.flatten(1) if pool == "flatten" else output.mean(dim=spatial)
            records[key] = pooled.double().numpy()

        return fn

    for module_name, module in model.named_modules():
        if isinstance(module, torch.nn.ReLU | torch.nn.GELU):
            module.register_forward_hook(hook(module_name))
    with torch.no_grad():
        model(images)
    return records


@pytest.mark.parametrize(
    "pool, batch_size, precision",
    [
        ("mean", N, "float64"),
        ("mean", 4, "float64"),
        ("flatten", N, "float64"),
        ("flatten", 4, "float64"),
        ("mean", N, "float32"),
        ("flatten", N, "float32"),
    ],
)
def test_every_path_gives_one_table(tmp_path, pool, batch_size, precision):
    cache = tmp_path / "cache"
    estimators = ("full", "minibatch") if pool == "mean" or batch_size == N else ("minibatch",)
    if precision == "float32":  # float32 is an option of the full estimator
        estimators = ("full",)
    for estimator in estimators:
        args = (batch_size, estimator, pool, precision)
        tables = {
            "cli compare (cold cache)": _via_cli_compare(tmp_path, cache, *args),
            "python compare (warm cache)": _via_python(cache, *args),
            "python compare (no cache)": _via_python(False, *args),
            "figure": _via_figure(tmp_path, cache, *args),
            "zoo": _via_zoo(tmp_path, cache, *args),
        }
        first_name, first = next(iter(tables.items()))
        meta = json.loads((tmp_path / f"zoo_{pool}_{batch_size}_{estimator}_{precision}" / "manifest.json").read_text())
        assert meta["pooling"].startswith("none" if pool == "flatten" else "mean") and meta["precision"] == precision
        for name, table in tables.items():
            assert list(table.index) == list(first.index), name
            assert list(table.columns) == list(first.columns), name
            np.testing.assert_allclose(
                table.to_numpy(float),
                first.to_numpy(float),
                rtol=1e-9,
                atol=1e-12,
                err_msg=f"{name} differs from {first_name}",
            )
        features = {name: _hooked_features(name, pool) for name in MODELS}
        a, b = features[MODELS[0]], features[MODELS[1]]
        assert list(first.index) == list(a) and list(first.columns) == list(b)
        if estimator == "full":  # batching does not change the full estimator
            expected = [[linear_cka_np(a[i], b[j]) for j in b] for i in a]
        else:
            starts = range(0, N, batch_size)  # N is a multiple of the batch size here
            expected = [
                [
                    minibatch_cka_np(
                        [a[i][s : s + batch_size] for s in starts], [b[j][s : s + batch_size] for s in starts]
                    )
                    for j in b
                ]
                for i in a
            ]
        np.testing.assert_allclose(first.to_numpy(float), np.array(expected), rtol=1e-5, atol=1e-7)
