"""``figure``: a grid of CKA heatmaps from a config, every model's features computed once for the whole figure."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from .._files import check_output_name
from ..engine._io import atomic_paths, check_outputs, ensure_writable_dir
from ..engine.estimation import pair_tables
from ..engine.executors import features_for_models
from ..engine.features import ModelFailure, resolve_cache, resolve_device
from ..errors import CKAProbeError
from .config import JobConfig
from .preflight import check_models
from .result import _jsonable
from .tables import long_table

__all__ = ["FigureResult", "figure_paths", "make_figure"]


def figure_paths(config: JobConfig, directory: str | Path | None = None) -> dict[str, Path]:
    """Where a figure job writes: one file per figure format, the panels' long table, the layer key (each model's
    layers numbered from 1 in forward order, the numbers the panels show when names do not fit) and the provenance
    JSON."""
    out = config.output
    directory = Path(directory or out.dir)
    name = check_output_name(out.name or (Path(config.source).stem if config.source else "figure"), "output.name")
    paths = {fmt: directory / f"{name}.{fmt}" for fmt in out.formats}  # formats: checked by the schema
    paths["csv"] = directory / f"{name}_panels.csv"
    paths["layers"] = directory / f"{name}_layers.csv"
    paths["json"] = directory / f"{name}.json"
    return paths


class FigureResult:
    """The panels' tables and the provenance of a figure; :meth:`save` writes the figure, tables and JSON."""

    def __init__(self, config: JobConfig, tables: dict, metadata: dict) -> None:
        self.config = config
        self.tables = tables
        self.metadata = metadata

    def draw(self, key: str | None = None):
        """The grid of panels; ``key`` names the layer key file that numbered axes refer to."""
        from ..plots import Panel, plot_panel_grid
        from ..plots.titles import figure_title

        rows = []
        for row in self.config.panels:
            cells = []
            for cell in row:
                if cell is None:
                    cells.append(None)
                    continue
                a, b = cell
                cells.append(
                    Panel(self.tables[(a, b)], title=f"{a} vs {b}", xlabel=f"layers of {b}", ylabel=f"layers of {a}")
                )
            rows.append(cells)
        heading = figure_title(self.metadata, title=self.config.title)
        return plot_panel_grid(
            rows, title=heading.title, subtitle=heading.subtitle, labels=self.config.output.labels, key=key
        )

    def save(self, directory: str | Path | None = None, overwrite: bool = False) -> dict[str, Path]:
        paths = figure_paths(self.config, directory)
        formats = list(self.config.output.formats)
        ensure_writable_dir(paths["json"].parent)
        check_outputs(paths.values(), overwrite)
        files = {**{fmt: paths[fmt] for fmt in formats}, "csv": paths["csv"], "layers": paths["layers"]}
        with atomic_paths({**files, "json": paths["json"]}) as tmp:
            if formats:
                fig = self.draw(key=paths["layers"].name)
                for fmt in formats:
                    fig.savefig(tmp[fmt], format=fmt, dpi=200)
            self.long_table().to_csv(tmp["csv"], index=False, float_format="%.10g")
            self.layer_key().to_csv(tmp["layers"], index=False)
            tmp["json"].write_text(json.dumps(_jsonable(self.metadata), indent=2) + "\n")
        return paths

    def layer_key(self):
        """One row per layer of each model in the panels: ``model``, ``number`` (1-based, forward order, as the
        numbered axes show it) and ``layer``."""
        import pandas as pd

        rows, seen = [], set()
        for (a, b), table in self.tables.items():
            for model, layers in ((a, table.index), (b, table.columns)):
                if model not in seen:
                    seen.add(model)
                    rows += [{"model": model, "number": i, "layer": str(layer)} for i, layer in enumerate(layers, 1)]
        return pd.DataFrame(rows, columns=["model", "number", "layer"])

    def long_table(self):
        import pandas as pd

        return pd.concat([long_table(table, a, b) for (a, b), table in self.tables.items()], ignore_index=True)


def make_figure(config: JobConfig, *, progress: bool = True, cache: Any = None) -> FigureResult:
    """Compute every panel of ``config`` (each model's forward pass at most once, none when cached)."""
    from ..data import load_probe_set

    started = time.perf_counter()
    check_models(
        config.models,
        {m.display: config.settings_for(m.display).layers for m in config.models},
        config.source or "figure config",
    )
    data, analysis = config.data, config.analysis
    device = resolve_device(analysis.device)
    probe = load_probe_set(data.source, n=data.n, seed=data.seed, skip_bad=data.skip_bad)
    needed = {label for row in config.panels for cell in row if cell for label in cell}
    requests = [m for m in config.models if m.display in needed]
    store = resolve_cache(cache if cache is not None else (config.cache if config.cache is not None else True))
    features = features_for_models(
        requests,
        probe,
        {m.display: config.settings_for(m.display) for m in requests},
        device=device,
        cache=store,
        progress=progress,
    )
    failed = {label: f for label, f in features.items() if isinstance(f, ModelFailure)}
    if failed:
        label, failure = next(iter(failed.items()))
        raise CKAProbeError(f"model {label} failed: {failure.error}")
    pairs = [cell for row in config.panels for cell in row if cell]
    settings = config.cka
    tables = pair_tables({label: ext.features for label, ext in features.items()}, pairs, settings)
    metadata = {
        **config.output_header(features, probe, device, {"total": round(time.perf_counter() - started, 3)}),
        "config": config.raw,
        "config_file": config.source,
        "config_sha256": config.digest(),
        "features_from_cache": {label: bool(ext.extra.get("cached")) for label, ext in features.items()},
        "panels": [[list(cell) if cell else None for cell in row] for row in config.panels],
    }
    return FigureResult(config, tables, metadata)
