"""Job configurations (``cka-probe figure`` and ``cka-probe zoo``): YAML read with ``safe_load``, every key checked.

Both kinds share these sections::

    data:      {source: embedded, n: 128, seed: 0, batch_size: null, skip_bad: false}
    weights:   pretrained            # default for every model: pretrained | random
    analysis:  {kernel: linear, unbiased: false, tokens: patch, layers: activations, sigma_frac: 1.0,
                device: auto, permutations: 0, bootstrap: 0, confidence: 0.95, stats_seed: 0}
    cache:     null                  # feature cache directory (null: the default one; false: no cache)
    models:                          # names, or mappings with name/label/weights/checkpoint/family/seed/layers
      - mobilenetv2
      - {name: vit_s, label: ViT-S, family: vit}

A figure adds ``title``, ``panels`` (rows of ``[row model, column model]`` label pairs, ``null`` for an
empty cell) and ``output: {dir, name, formats}``; a zoo adds ``output: {dir, per_pair, formats, summary_score}``.
Relative paths (data directories, checkpoints, output directories) are taken from the current directory.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from ..errors import ConfigError
from .features import FeatureSettings, ModelRequest
from .provenance import sha256_text

__all__ = ["ConfigError", "JobConfig", "load_job_config", "parse_job_config"]


_DATA = {"source": "embedded", "n": 128, "seed": 0, "batch_size": None, "skip_bad": False}
_ANALYSIS = {"kernel": "linear", "unbiased": False, "tokens": "patch", "layers": "activations", "sigma_frac": 1.0,
             "device": "auto", "permutations": 0, "bootstrap": 0, "confidence": 0.95, "stats_seed": 0}
_MODEL = {"name", "label", "weights", "checkpoint", "family", "seed", "layers"}
_OUTPUT = {
    "figure": {"dir": "figures", "name": None, "formats": ["png", "pdf"]},
    "zoo": {"dir": "zoo", "per_pair": False, "formats": ["png"], "summary_score": "diagonal_band_cka"},
}
_TOP = {
    "figure": {"title", "data", "weights", "analysis", "cache", "models", "panels", "output"},
    "zoo": {"data", "weights", "analysis", "cache", "models", "output"},
}


@dataclass
class JobConfig:
    """A checked job configuration, defaults filled in."""

    kind: str
    data: dict[str, Any]
    analysis: dict[str, Any]
    models: list[ModelRequest]
    model_layers: dict[str, Any]
    output: dict[str, Any]
    cache: Any = None
    title: str | None = None
    panels: list[list[tuple[str, str] | None]] = field(default_factory=list)
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def settings_for(self, label: str) -> FeatureSettings:
        return FeatureSettings(layers=self.model_layers.get(label, self.analysis["layers"]),
                               tokens=self.analysis["tokens"], batch_size=self.data["batch_size"])

    def labels(self) -> list[str]:
        return [m.display for m in self.models]

    def digest(self) -> str:
        """Hash of everything that decides the results (not the output place nor the formats)."""
        record = {k: v for k, v in self.raw.items() if k not in ("output", "title", "cache")}
        return sha256_text(json.dumps(record, sort_keys=True, default=str))


def load_job_config(path: str | Path, kind: str, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Read a YAML job file (``yaml.safe_load``) and check it; ``overrides`` are dotted keys (``data.n``)."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; give the path of a YAML job file") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    config = parse_job_config(raw, kind, overrides)
    config.source = str(path)
    return config


def parse_job_config(raw: Any, kind: str, overrides: dict[str, Any] | None = None) -> JobConfig:
    """Check a configuration mapping (see the module docstring) and fill in defaults."""
    if not isinstance(raw, dict):
        raise ConfigError(f"a {kind} config must be a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for dotted, value in (overrides or {}).items():
        _set_dotted(raw, dotted, value)
    _check_keys(raw, _TOP[kind], f"{kind} config")
    data = _section(raw, "data", _DATA)
    analysis = _section(raw, "analysis", _ANALYSIS)
    output = _section(raw, "output", _OUTPUT[kind])
    _check_values(data, analysis)
    weights = raw.get("weights", "pretrained")
    if weights not in ("pretrained", "random"):
        raise ConfigError(f"weights: {weights!r} is not pretrained or random")

    models, model_layers = [], {}
    entries = raw.get("models")
    if not isinstance(entries, list) or not entries:
        raise ConfigError("models: list at least one model (a name, or a mapping with a name)")
    for i, entry in enumerate(entries):
        if isinstance(entry, str):
            entry = {"name": entry}
        if not isinstance(entry, dict) or "name" not in entry:
            raise ConfigError(f"models[{i}]: give a model name, or a mapping with a 'name' key")
        _check_keys(entry, _MODEL, f"models[{i}]")
        request = ModelRequest(
            name=str(entry["name"]), weights=entry.get("weights", weights), checkpoint=entry.get("checkpoint"),
            seed=int(entry.get("seed", data["seed"])), label=entry.get("label"), family=entry.get("family"),
        )
        if request.weights not in ("pretrained", "random"):
            raise ConfigError(f"models[{i}].weights: {request.weights!r} is not pretrained or random")
        if request.display in [m.display for m in models]:
            raise ConfigError(f"models[{i}]: label {request.display!r} is used twice; give each model a unique label")
        models.append(request)
        if "layers" in entry:
            model_layers[request.display] = entry["layers"]

    panels: list[list[tuple[str, str] | None]] = []
    if kind == "figure":
        panels = _panels(raw.get("panels"), [m.display for m in models])
    return JobConfig(kind=kind, data=data, analysis=analysis, models=models, model_layers=model_layers,
                     output=output, cache=raw.get("cache"), title=raw.get("title"), panels=panels, raw=raw)


def _section(raw: dict, name: str, defaults: dict) -> dict:
    given = raw.get(name) or {}
    if not isinstance(given, dict):
        raise ConfigError(f"{name}: must be a mapping, got {type(given).__name__}")
    _check_keys(given, set(defaults), name)
    return {**defaults, **given}


def _check_keys(given: dict, valid: set[str], where: str) -> None:
    unknown = sorted(set(given) - valid)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r}; valid keys are {', '.join(sorted(valid))}")


def _check_values(data: dict, analysis: dict) -> None:
    if not isinstance(data["n"], int) or data["n"] < 2:
        raise ConfigError(f"data.n: {data['n']!r} is not a number of images >= 2")
    if analysis["kernel"] not in ("linear", "rbf"):
        raise ConfigError(f"analysis.kernel: {analysis['kernel']!r} is not linear or rbf")
    if analysis["tokens"] not in ("patch", "all", "cls"):
        raise ConfigError(f"analysis.tokens: {analysis['tokens']!r} is not patch, all or cls")
    for key in ("permutations", "bootstrap"):
        if not isinstance(analysis[key], int) or analysis[key] < 0:
            raise ConfigError(f"analysis.{key}: {analysis[key]!r} is not a count >= 0")
    if not 0 < float(analysis["confidence"]) < 1:
        raise ConfigError(f"analysis.confidence: {analysis['confidence']!r} is not in (0, 1)")
    if (analysis["unbiased"] or analysis["permutations"] or analysis["bootstrap"]) and data["n"] < 4:
        raise ConfigError(f"data.n: the unbiased estimator and the statistics need n >= 4, got {data['n']}")


def _panels(panels: Any, labels: list[str]) -> list[list[tuple[str, str] | None]]:
    if not isinstance(panels, list) or not panels:
        raise ConfigError("panels: give rows of [row model, column model] pairs, e.g. [[[MobileNetV2, ViT-S]]]")
    rows = []
    for r, row in enumerate(panels):
        if not isinstance(row, list):
            raise ConfigError(f"panels[{r}]: a row must be a list of [row model, column model] pairs")
        cells = []
        for c, cell in enumerate(row):
            if cell is None:
                cells.append(None)
                continue
            if not (isinstance(cell, list) and len(cell) == 2):
                raise ConfigError(f"panels[{r}][{c}]: give a pair [row model, column model] or null")
            for label in cell:
                if label not in labels:
                    raise ConfigError(f"panels[{r}][{c}]: {label!r} is not a model label; labels are {', '.join(labels)}")
            cells.append((str(cell[0]), str(cell[1])))
        rows.append(cells)
    return rows


def _set_dotted(raw: dict, dotted: str, value: Any) -> None:
    keys = dotted.split(".")
    node = raw
    for key in keys[:-1]:
        node = node.setdefault(key, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {dotted}: {key} is not a section")
    node[keys[-1]] = value
