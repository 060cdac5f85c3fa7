"""``zoo``: every pair of a list of models, each model's forward pass run once, resumable after a kill.

Stages, each of which survives an interruption:

1. features: one pass per model through the feature cache (:mod:`cka_probe.engine.cache`); a model
   whose features are cached is not run again, a model that fails is recorded and the others go on;
2. pairs: the CKA of every unordered pair of working models from one vectorized product over all their
   layers (:func:`~cka_probe.engine.estimation.pair_tables`), with permutation p-values and bootstrap
   intervals when asked; the long table is kept in ``<out>/.zoo-state/`` and reused by a rerun when its
   bytes still have the size and SHA-256 taken from the bytes written (else it is recomputed, with a
   :class:`~cka_probe.engine.cache.CacheCorruptWarning`);
3. outputs: written atomically; a per-pair file that exists is not redrawn when the pair table was
   reused; ``manifest.json`` is written last and marks the job complete. A process killed mid-write
   leaves a temporary file that the rerun's write of that output removes (:mod:`cka_probe._files`).

A rerun of a complete job with the same configuration and the same feature keys (the images' content, the
weights' hashes, the library versions: :mod:`cka_probe.engine.cache`) finds its manifest and outputs and
does nothing; when those keys changed, features, pairs and every output are computed again;
a rerun of a job with failed models tries those models again (the others come from the cache).
An output directory holding the results of another configuration is refused unless ``overwrite``.

Outputs under the output directory:

* ``pairs_long.parquet`` / ``.csv``: model_a, model_b, layer_a, layer_b, index_a, index_b, depth_a,
  depth_b, cka, and p_value / ci_low / ci_high when asked (with ``analysis.bootstrap``, also the pair's
  score intervals below, the same on every row of a pair);
* ``pairs_summary.parquet`` / ``.csv``: per pair: families, homogeneous flag, layer counts, mean CKA,
  diagonal-band CKA, depth correspondence (:mod:`cka_probe.jobs.summary`), share of significant cells;
  with ``analysis.bootstrap``, ``diagonal_band_cka_low`` / ``_high`` and ``depth_correspondence_low`` /
  ``_high``: percentile intervals (``analysis.confidence``) of the score over the bootstrap replicates of the
  pair's whole matrix (:func:`~cka_probe.jobs.summary.score_interval`), from the same replicates as the
  cells' intervals;
* ``models.csv``: per model: status (ok / failed), error, timm name, family, layers, from cache, seconds;
* ``zoo_summary.png``: clustered heatmap of a pair score between models (``output.summary_score``);
* ``pairs/A_vs_B.csv`` and ``.png`` per pair with ``output.per_pair: true``;
* ``manifest.json``: configuration, its hash, data provenance, versions, timings, failures.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from .._choices import INTERVAL_SCORES, SUMMARY_SCORES
from .._files import sha256_bytes
from ..engine._io import atomic_path, ensure_writable_dir, new_output_dir, safe_name
from ..engine.cache import CacheCorruptWarning, feature_key, key_digest
from ..engine.estimation import CKASettings, math_input, pair_tables, pooling_description
from ..engine.executors import features_for_models
from ..engine.features import ModelFailure, model_provenance, resolve_cache, resolve_device
from ..engine.provenance import sha256_text
from ..errors import CKAProbeError, OutputNameError
from .config import AnalysisSection, ConfigError, JobConfig
from .preflight import check_models
from .result import _jsonable, output_stem
from .summary import depth_correspondence, diagonal_band_mean, score_interval
from .tables import long_table

__all__ = ["ZooResult", "run_zoo", "SUMMARY_SCORES"]

SCORE_FUNCTIONS = {"diagonal_band_cka": diagonal_band_mean, "depth_correspondence": depth_correspondence}
SCORE_RANGES = {"diagonal_band_cka": (0.0, 1.0), "mean_cka": (0.0, 1.0), "depth_correspondence": (-2.0, 1.0)}
"""The values each summary score can take (depth correspondence is negative against depth)."""
STATE_DIR = ".zoo-state"


@dataclass
class ZooResult:
    """What a zoo job produced (also when it found everything done already)."""

    output_dir: Path
    long: pd.DataFrame | None
    summary: pd.DataFrame
    models: pd.DataFrame
    manifest: dict[str, Any]
    up_to_date: bool = False
    files: dict[str, Path] = field(default_factory=dict)


def run_zoo(
    config: JobConfig,
    *,
    output_dir: str | Path | None = None,
    executor: str = "local",
    ray_address: str | None = None,
    cache: Any = None,
    overwrite: bool = False,
    progress: bool = True,
) -> ZooResult:
    """Run (or resume) the zoo job ``config`` describes; see the module docstring.

    A run that fails leaves no empty output folder nor an empty state folder behind.
    """
    if len(config.models) < 2:
        raise ConfigError(
            f"{config.source or 'zoo config'}: models lists {len(config.models)} model, and a zoo compares pairs; "
            "list at least two (or use cka-probe layers / compare for one network)"
        )
    if config.output.per_pair:
        _check_pair_file_names([m.display for m in config.models])
    check_models(
        config.models,
        {m.display: config.settings_for(m.display).layers for m in config.models},
        config.source or "zoo config",
    )
    with new_output_dir(Path(output_dir or config.output.dir)) as out:
        try:
            return _run_zoo(
                config,
                out,
                executor=executor,
                ray_address=ray_address,
                cache=cache,
                overwrite=overwrite,
                progress=progress,
            )
        except BaseException:
            with contextlib.suppress(OSError):
                (out / STATE_DIR).rmdir()  # only when the run wrote nothing there
            raise


def _run_zoo(
    config: JobConfig, out: Path, *, executor: str, ray_address: str | None, cache: Any, overwrite: bool, progress: bool
) -> ZooResult:
    started = time.perf_counter()
    score = config.output.summary_score  # one of SUMMARY_SCORES: the config schema checked it
    digest = config.digest()

    from ..data import load_probe_set

    data, analysis = config.data, config.analysis
    probe = load_probe_set(data.source, n=data.n, seed=data.seed, skip_bad=data.skip_bad)
    done = _finished_job(out, digest, overwrite, _feature_keys(config, probe))
    if done is not None:
        return done
    state = ensure_writable_dir(out / STATE_DIR)
    store = resolve_cache(cache if cache is not None else (config.cache if config.cache is not None else True))
    device = resolve_device(analysis.device)
    features = features_for_models(
        config.models,
        probe,
        {m.display: config.settings_for(m.display) for m in config.models},
        device=analysis.device,  # as configured: each Ray worker resolves auto on its own machine
        cache=store,
        progress=progress,
        executor=executor,
        ray_address=ray_address,
        probe_spec={"source": data.source, "n": data.n, "seed": data.seed, "skip_bad": data.skip_bad},
    )
    working = {label: ext for label, ext in features.items() if not isinstance(ext, ModelFailure)}
    failures = [ext.record() for ext in features.values() if isinstance(ext, ModelFailure)]
    feature_seconds = time.perf_counter() - started
    if len(working) < 2:
        first = failures[0]  # two models at least were listed (run_zoo checked), so one failed at least
        raise CKAProbeError(
            f"{len(failures)} of {len(config.models)} models failed, leaving no pair to compare "
            f"(first: {first['label']}: {first['error']}); fix the models or list at least two that run"
        )

    pair_started = time.perf_counter()
    pairs = list(itertools.combinations(list(working), 2))
    feature_keys = _feature_keys(config, probe)  # again: pretrained weights downloaded just now have a file hash
    long, pairs_reused = _pair_stage(state, digest, working, pairs, analysis, config.cka, progress, feature_keys)
    pair_seconds = time.perf_counter() - pair_started

    families = {
        m.display: (m.family or model_provenance(working[m.display]).get("family", "unknown"))
        if m.display in working
        else (m.family or "unknown")
        for m in config.models
    }
    summary = _pair_summary(long, working, families)
    models = _model_table(config, features, families)
    heading = {  # what the figures' subtitles say: weights, data, n, and the settings that differ from B.1's
        "models": {label: model_provenance(ext) for label, ext in working.items()},
        "data": probe.provenance(),
        "n": probe.n,
        **config.cka.record(),
        "tokens": analysis.tokens,
        "pooling": pooling_description(analysis.pool),
    }
    files = _write_outputs(
        out, config, long, summary, models, score, working, keep_pair_files=pairs_reused, heading=heading
    )
    manifest = {
        **config.output_header(
            working,
            probe,
            device,
            {
                "features": round(feature_seconds, 3),
                "pairs": round(pair_seconds, 3),
                "total": round(time.perf_counter() - started, 3),
            },
        ),
        "complete": True,
        "config": config.raw,
        "config_file": config.source,
        "config_sha256": digest,
        "executor": executor,
        "feature_keys": feature_keys,
        "failures": failures,
        "pairs": len(pairs),
        "statistics": {
            "permutations": analysis.permutations,
            "bootstrap": analysis.bootstrap,
            "confidence": analysis.confidence,
            "seed": analysis.stats_seed,
        },
        "outputs": sorted(str(p.relative_to(out)) for p in files.values()),
    }
    with atomic_path(out / "manifest.json") as tmp:
        tmp.write_text(json.dumps(_jsonable(manifest), indent=2) + "\n")
    files["manifest"] = out / "manifest.json"
    return ZooResult(out, long, summary, models, manifest, up_to_date=False, files=files)


# --------------------------------------------------------------------------- stages


def _check_pair_file_names(labels: list[str]) -> None:
    """Refuse labels whose per-pair files would share a name (``net/a`` and ``net_a``), before any model runs.

    File names are compared without case, as case-insensitive file systems (macOS, Windows) do.
    """
    seen: dict[str, str] = {}
    for label in labels:
        clean = safe_name(label)
        if not clean:
            raise OutputNameError(
                f"model label {label!r} has no character usable in a file name; set a label: for it in the config"
            )
        other = seen.setdefault(clean.casefold(), label)
        if other != label:
            raise OutputNameError(
                f"models {other!r} and {label!r} would write the same per-pair files (pairs/{clean}_vs_...); "
                "set distinct label: values for them in the config"
            )


def _feature_keys(config: JobConfig, probe) -> dict[str, str | None]:
    """Per model label, the digest of its feature-cache key (images' content, weights' hashes, versions...).

    A job whose keys changed since its outputs were written (an image edited in place, a checkpoint
    rewritten, timm upgraded) is not up to date, and its pair stage is not reused.
    """
    keys: dict[str, str | None] = {}
    for request in config.models:
        try:
            key = feature_key(request.key_record(), probe.provenance(), config.settings_for(request.display).record())
            keys[request.display] = key_digest(key)
        except (CKAProbeError, OSError):  # an unknown model or a missing checkpoint: it fails in the feature stage
            keys[request.display] = None
    return keys


def _finished_job(out: Path, digest: str, overwrite: bool, feature_keys: dict[str, str | None]) -> ZooResult | None:
    manifest_path = out / "manifest.json"
    state_path = out / STATE_DIR / "pairs.json"
    recorded = None
    for path in (manifest_path, state_path):
        if path.exists():
            try:
                recorded = json.loads(path.read_text()).get("config_sha256")
            except (OSError, ValueError):
                recorded = None
            break
    if recorded is not None and recorded != digest and not overwrite:
        raise ConfigError(
            f"{out} holds a zoo job of another configuration (sha256 {recorded[:12]}...); "
            "choose another output.dir / --out, or pass --overwrite to replace it"
        )
    if overwrite or recorded != digest or not manifest_path.exists():
        return None
    manifest = json.loads(manifest_path.read_text())
    if (
        not manifest.get("complete")
        or manifest.get("failures")
        or not all((out / rel).exists() for rel in manifest.get("outputs", []))
    ):
        return None  # unfinished, or with failed models to try again
    if manifest.get("feature_keys") != feature_keys:
        return None  # the images, weights or library versions changed since: the features are not the same
    return ZooResult(
        out,
        None,
        pd.read_csv(out / "pairs_summary.csv"),
        pd.read_csv(out / "models.csv"),
        manifest,
        up_to_date=True,
        files={rel: out / rel for rel in manifest["outputs"]},
    )


def _pair_stage(
    state: Path,
    digest: str,
    working: dict,
    pairs: list,
    analysis: AnalysisSection,
    settings: CKASettings,
    progress: bool,
    feature_keys: dict[str, str | None],
) -> tuple[pd.DataFrame, bool]:
    """The long table of every pair, reused from the state directory when it matches this job and its features.

    Returns:
        The table, and whether it was reused (else it was computed now).
    """
    stage_key = sha256_text(
        json.dumps(
            {
                "config": digest,
                "models": {k: list(v.features) for k, v in working.items()},
                "feature_keys": {k: feature_keys.get(k) for k in working},
            },
            sort_keys=True,
        )
    )
    table_path, meta_path = state / "pairs.parquet", state / "pairs.json"
    saved = _saved_pair_table(table_path, meta_path, stage_key)
    if saved is not None:
        return saved, True
    tables = pair_tables({label: ext.features for label, ext in working.items()}, pairs, settings)
    frames = []
    for a, b in tqdm(pairs, desc="pairs", unit="pair", disable=not progress):
        frame = long_table(tables[(a, b)], a, b)
        _add_statistics(frame, working[a], working[b], analysis)
        frames.append(frame)
    long = pd.concat(frames, ignore_index=True) if frames else _empty_long(analysis)
    data = long.to_parquet(None, index=False)
    with atomic_path(table_path) as tmp:
        tmp.write_bytes(data)
    meta = {"stage_key": stage_key, "config_sha256": digest, "size": len(data), "sha256": sha256_bytes(data)}
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta) + "\n")
    return long, False


def _saved_pair_table(table_path: Path, meta_path: Path, stage_key: str) -> pd.DataFrame | None:
    """The pair table a previous run of this job saved, read from bytes whose size and SHA-256 match those taken
    from the bytes written; ``None`` when there is none for this job, or (with a warning) when it fails its check."""
    try:
        meta = json.loads(meta_path.read_text())
        if not isinstance(meta, dict):
            raise ValueError("not a mapping")
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        problem = f"its record {meta_path.name} cannot be read ({type(exc).__name__})"
    else:
        if meta.get("stage_key") != stage_key:
            return None  # another job's (or other features') table: recomputed, nothing is wrong with it
        data, problem = _checked_pair_table(table_path, meta)
        if problem is None:
            return pd.read_parquet(io.BytesIO(data))  # the bytes checked, not a second read
    warnings.warn(
        f"saved pair table {table_path} is not used: {problem}; recomputing the pairs",
        CacheCorruptWarning,
        stacklevel=3,
    )
    return None


def _checked_pair_table(table_path: Path, meta: dict[str, Any]) -> tuple[bytes, str | None]:
    """The saved pair table's bytes, and why they are not those written (``None`` when they are)."""
    if "sha256" not in meta:
        return b"", "it has no recorded SHA-256 (written by an older version)"
    try:
        data = table_path.read_bytes()
    except OSError as exc:
        return b"", f"it cannot be read ({exc.strerror or exc})"
    if len(data) != meta.get("size") or sha256_bytes(data) != meta["sha256"]:
        return data, "its bytes differ from those written (size or SHA-256)"
    return data, None


def _add_statistics(frame: pd.DataFrame, ext_a, ext_b, analysis: AnalysisSection) -> None:
    if not (analysis.permutations or analysis.bootstrap):
        return
    kwargs = {"kernel": analysis.kernel, "unbiased": analysis.unbiased, "sigma_frac": analysis.sigma_frac}
    feats_a = {name: math_input(value, name) for name, value in ext_a.features.items()}
    feats_b = {name: math_input(value, name) for name, value in ext_b.features.items()}
    if analysis.permutations:
        from ..math import permutation_test

        p_values = permutation_test(
            feats_a, feats_b, num_permutations=analysis.permutations, seed=analysis.stats_seed, **kwargs
        )
        frame["p_value"] = p_values.values.cpu().numpy().ravel()
    if analysis.bootstrap:
        from ..math import bootstrap_replicates, percentile_interval

        # One set of replicates gives the cells' intervals and the pair scores' (each replicate matrix scored whole).
        replicates = bootstrap_replicates(
            feats_a, feats_b, num_resamples=analysis.bootstrap, seed=analysis.stats_seed, **kwargs
        )
        low, high = percentile_interval(replicates, analysis.confidence)
        frame["ci_low"] = low.cpu().numpy().ravel()
        frame["ci_high"] = high.cpu().numpy().ravel()
        matrices = replicates.cpu().numpy()
        for score in INTERVAL_SCORES:
            frame[f"{score}_low"], frame[f"{score}_high"] = score_interval(
                matrices, SCORE_FUNCTIONS[score], analysis.confidence
            )


def _empty_long(analysis: AnalysisSection) -> pd.DataFrame:
    columns = ["model_a", "model_b", "layer_a", "layer_b", "index_a", "index_b", "depth_a", "depth_b", "cka"]
    columns += ["p_value"] if analysis.permutations else []
    columns += ["ci_low", "ci_high"] if analysis.bootstrap else []
    columns += [f"{score}_{end}" for score in INTERVAL_SCORES for end in ("low", "high")] if analysis.bootstrap else []
    return pd.DataFrame({c: pd.Series(dtype=object if c.startswith(("model", "layer")) else float) for c in columns})


def _pair_summary(long: pd.DataFrame, working: dict, families: dict[str, str]) -> pd.DataFrame:
    rows = []
    for (a, b), frame in long.groupby(["model_a", "model_b"], sort=False):
        matrix = frame.pivot(index="index_a", columns="index_b", values="cka").to_numpy()
        row = {
            "model_a": a,
            "model_b": b,
            "family_a": families[a],
            "family_b": families[b],
            "homogeneous": families[a] == families[b] and families[a] != "unknown",
            "layers_a": matrix.shape[0],
            "layers_b": matrix.shape[1],
            "mean_cka": float(np.nanmean(matrix)) if np.isfinite(matrix).any() else float("nan"),
            "diagonal_band_cka": diagonal_band_mean(matrix),
            "depth_correspondence": depth_correspondence(matrix),
        }
        for score in INTERVAL_SCORES:
            if f"{score}_low" in frame:
                row[f"{score}_low"], row[f"{score}_high"] = (
                    float(frame[f"{score}_{end}"].iloc[0]) for end in ("low", "high")
                )
        if "p_value" in frame:
            row["significant_share"] = float((frame["p_value"] < 0.05).mean())
        rows.append(row)
    columns = [
        "model_a",
        "model_b",
        "family_a",
        "family_b",
        "homogeneous",
        "layers_a",
        "layers_b",
        "mean_cka",
        "diagonal_band_cka",
        "depth_correspondence",
    ]
    columns += [f"{score}_{end}" for score in INTERVAL_SCORES for end in ("low", "high") if f"{score}_low" in long]
    return pd.DataFrame(rows, columns=columns + (["significant_share"] if "p_value" in long else []))


def _model_table(config: JobConfig, features: dict, families: dict[str, str]) -> pd.DataFrame:
    rows = []
    for request in config.models:
        ext = features[request.display]
        if isinstance(ext, ModelFailure):
            rows.append(
                {
                    "label": request.display,
                    "name": request.name,
                    "status": "failed",
                    "error": ext.error,
                    "timm_name": None,
                    "family": families[request.display],
                    "weights": request.weights,
                    "layers": 0,
                    "from_cache": False,
                    "seconds": None,
                }
            )
            continue
        prov = model_provenance(ext)
        rows.append(
            {
                "label": request.display,
                "name": request.name,
                "status": "ok",
                "error": None,
                "timm_name": prov.get("timm_name"),
                "family": families[request.display],
                "weights": prov.get("weights"),
                "layers": len(ext.features),
                "from_cache": bool(ext.extra.get("cached")),
                "seconds": round(ext.seconds, 3),
            }
        )
    return pd.DataFrame(rows)


def _write_outputs(
    out: Path, config: JobConfig, long, summary, models, score: str, working: dict, keep_pair_files: bool, heading: dict
) -> dict[str, Path]:
    """Write every output; existing per-pair files are kept only when ``keep_pair_files`` (same pair table).

    ``heading`` (models, data, n) is what the figures' subtitles say.
    """
    from ..plots.titles import figure_title

    files = {}

    def write(name: str, writer) -> None:
        path = out / name
        with atomic_path(path) as tmp:
            writer(tmp)
        files[name] = path

    write("pairs_long.parquet", lambda p: long.to_parquet(p, index=False))
    write("pairs_long.csv", lambda p: long.to_csv(p, index=False, float_format="%.10g"))
    write("pairs_summary.parquet", lambda p: summary.to_parquet(p, index=False))
    write("pairs_summary.csv", lambda p: summary.to_csv(p, index=False, float_format="%.10g"))
    write("models.csv", lambda p: models.to_csv(p, index=False))
    labels = list(working)
    if len(labels) >= 2:
        from ..plots import plot_pair_scores

        scores = pd.DataFrame(np.nan, index=labels, columns=labels)
        for row in summary.itertuples():
            scores.loc[row.model_a, row.model_b] = scores.loc[row.model_b, row.model_a] = getattr(row, score)
        families = models.set_index("label")["family"].reindex(labels)
        low, high = SCORE_RANGES[score]
        figure = plot_pair_scores(
            scores,
            families,
            score_name=score.replace("_", " "),
            vmin=low,
            vmax=high,
            subtitle=figure_title(heading).subtitle,
        )
        write("zoo_summary.png", lambda p: figure.savefig(p, format="png", dpi=150, bbox_inches="tight"))
    if config.output.per_pair:
        ensure_writable_dir(out / "pairs")
        for (a, b), frame in long.groupby(["model_a", "model_b"], sort=False):
            stem = output_stem(a, b)
            matrix = frame.pivot(index="layer_a", columns="layer_b", values="cka")
            matrix = matrix.loc[frame["layer_a"].unique(), frame["layer_b"].unique()]  # forward order
            matrix.index.name, matrix.columns.name = a, b
            if not (keep_pair_files and (out / "pairs" / f"{stem}.csv").exists()):
                write(f"pairs/{stem}.csv", lambda p, m=matrix: m.to_csv(p, float_format="%.10g"))
            else:
                files[f"pairs/{stem}.csv"] = out / "pairs" / f"{stem}.csv"
            for fmt in config.output.formats:
                target = f"pairs/{stem}.{fmt}"
                if keep_pair_files and (out / target).exists():
                    files[target] = out / target
                    continue
                from ..plots import new_figure, plot_cka_heatmap

                fig = new_figure()
                not_significant = None
                if "p_value" in frame:  # dots on the cells whose permutation p-value is >= 0.05
                    p_values = frame.pivot(index="layer_a", columns="layer_b", values="p_value")
                    not_significant = p_values.loc[matrix.index, matrix.columns].to_numpy() >= 0.05
                pair_heading = {**heading, "models": {k: heading["models"].get(k, {}) for k in (a, b)}}
                plot_cka_heatmap(
                    matrix,
                    fig.subplots(),
                    title=f"{a} vs {b}",
                    hatch_mask=not_significant,
                    subtitle=figure_title(pair_heading).subtitle,
                    labels=config.output.labels,
                    key=f"{stem}.csv",  # written beside it: its rows and columns are the layers in forward order
                )
                write(target, lambda p, f=fig, fm=fmt: f.savefig(p, format=fm, dpi=150))
    return files
