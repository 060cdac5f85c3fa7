"""Job configurations (``cka-probe figure`` and ``cka-probe zoo``): YAML read with ``safe_load``, every key checked.

Both kinds share these sections::

    data:      {source: embedded, n: 128, seed: 0, batch_size: null, skip_bad: false}
    weights:   pretrained            # default for every model: pretrained | random
    analysis:  {kernel: linear, unbiased: false, estimator: full, tokens: patch, pool: mean,
                layers: activations, layouts: {}, sigma_frac: 1.0, device: auto,
                permutations: 0, bootstrap: 0, confidence: 0.95, stats_seed: 0}
    cache:     null                  # feature cache directory (null: the default one; false: no cache)
    models:                          # names (or training checkpoints), or mappings with name/label/weights/
      - mobilenetv2                  # checkpoint/checkpoint_key/num_classes/img_size/family/seed/layers/
      - {name: vit_s, label: ViT-S, family: vit}   # tokens/layouts

A figure adds ``title``, ``panels`` (rows of ``[row model, column model]`` label pairs, ``null`` for an
empty cell) and ``output: {dir, name, formats, labels}``; a zoo adds
``output: {dir, per_pair, formats, labels, summary_score}``. ``analysis.estimator`` has the meaning it
has everywhere (:mod:`cka_probe.engine.estimation`): ``full`` over all n images, ``minibatch`` over
batches of ``data.batch_size``. ``layouts`` maps layer-name patterns to layouts (``{"blocks.*.act": NLC}``).
Relative paths (data directories, checkpoints, output directories) are taken from the current directory.
Each model sees the probe images prepared its own way: a ``cka-probe train`` checkpoint as its run's
validation did, any other model by its timm pretrained config; a model entry's ``img_size`` sets its
input resolution instead.
The schema is checked whole, before any model runs; the first problem is one line naming its key.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field, field_validator, model_validator

from .._choices import (
    FORMATS,
    CheckpointSelect,
    Estimator,
    Family,
    Format,
    Kernel,
    Labels,
    Pool,
    Precision,
    SummaryScore,
    Tokens,
    Weights,
)
from .._config import DeviceName, Section, parse_overrides, read_yaml, set_dotted, validate
from ..engine.estimation import JOB_KEYS, CKASettings, check_pooling
from ..engine.provenance import sha256_text
from ..errors import CKAProbeError, ConfigError

if TYPE_CHECKING:  # features load torch and timm: a config is checked without them
    from ..engine.features import FeatureSettings, ModelRequest

__all__ = ["ConfigError", "JobConfig", "load_job_config", "parse_job_config"]


def _formats(value: Any) -> Any:
    """``png`` or ``"png,pdf"`` as a list; a list stays as it is."""
    if isinstance(value, str):
        return [part.strip().lower() for part in value.split(",") if part.strip()]
    return value


def _stem(value: str | None) -> str | None:
    from .._files import check_output_name

    if value is not None:
        try:
            check_output_name(value, "output.name")
        except CKAProbeError:
            raise ValueError("must be a plain file name that stays in output.dir (no '/' nor '..')") from None
    return value


def _layouts(value):
    """``{pattern: layout}`` or ``["PATTERN=LAYOUT", ...]`` as an ordered mapping, each layout checked."""
    if not value:  # nothing to check (and capture, which loads timm, need not load)
        return value if value is None else {}
    from ..capture import parse_layouts

    try:
        return parse_layouts(value, "layouts")
    except CKAProbeError as exc:
        raise ValueError(str(exc)) from None


class DataSection(Section):
    source: str = "embedded"
    n: int = Field(128, ge=2)
    seed: int = Field(0, ge=0)
    batch_size: int | None = Field(None, ge=1)
    skip_bad: bool = False


class AnalysisSection(Section):
    kernel: Kernel = "linear"
    unbiased: bool = False
    estimator: Estimator = "full"
    precision: Precision = "float64"
    tokens: Tokens = "patch"
    pool: Pool = "mean"
    layers: str | list[str] = "activations"
    layouts: dict[str, str] | list[str] = Field(default_factory=dict)
    sigma_frac: float = Field(1.0, gt=0)
    device: DeviceName = "auto"
    permutations: int = Field(0, ge=0)
    bootstrap: int = Field(0, ge=0)
    confidence: float = Field(0.95, gt=0, lt=1)
    stats_seed: int = Field(0, ge=0)

    _check_layouts = field_validator("layouts")(lambda value: _layouts(value))


class ModelEntry(Section):
    name: str
    label: str | None = None
    weights: Weights | None = None
    checkpoint: str | None = None
    family: Family | None = None
    seed: int | None = Field(None, ge=0)
    layers: str | list[str] | None = None
    tokens: Tokens | None = None
    layouts: dict[str, str] | list[str] | None = None
    checkpoint_key: CheckpointSelect = "auto"
    num_classes: int | None = Field(None, ge=1)
    img_size: int | None = Field(None, ge=1)

    _check_layouts = field_validator("layouts")(lambda value: _layouts(value))

    @field_validator("label")
    @classmethod
    def _label(cls, value: str | None) -> str | None:
        if value is not None and not value.strip():
            raise ValueError("must not be empty")
        return value


class _Output(Section):
    formats: list[Format] = Field(default_factory=lambda: ["png"])
    labels: Labels = "auto"

    _split_formats = field_validator("formats", mode="before")(_formats)

    @field_validator("formats")
    @classmethod
    def _some_format(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError(f"list at least one of {', '.join(FORMATS)}")
        return list(dict.fromkeys(value))


class FigureOutput(_Output):
    dir: str = "figures"
    name: str | None = None
    formats: list[Format] = Field(default_factory=lambda: ["png", "pdf"])

    _check_name = field_validator("name")(_stem)


class ZooOutput(_Output):
    dir: str = "zoo"
    per_pair: bool = False
    summary_score: SummaryScore = "diagonal_band_cka"


class _Job(Section):
    data: DataSection = Field(default_factory=DataSection)
    weights: Weights = "pretrained"
    analysis: AnalysisSection = Field(default_factory=AnalysisSection)
    cache: str | bool | None = None
    models: list[ModelEntry] = Field(min_length=1)

    @field_validator("models", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [{"name": entry} if isinstance(entry, str) else entry for entry in value]
        return value

    @model_validator(mode="after")
    def _consistent(self):
        seen: set[str] = set()
        for i, entry in enumerate(self.models):
            label = entry.label or entry.name
            if label in seen:
                raise ValueError(f"models[{i}]: label {label!r} is used twice; give each model a unique label")
            seen.add(label)
        analysis, data = self.analysis, self.data
        if (analysis.permutations or analysis.bootstrap) and data.n < 4:
            raise ValueError(f"data.n: the permutation test and the bootstrap need n >= 4, got {data.n}")
        if (analysis.permutations or analysis.bootstrap) and analysis.estimator != "full":
            raise ValueError(
                "analysis.permutations and analysis.bootstrap resample the full estimator; set analysis.estimator: full"
            )
        return self  # the CKA settings themselves: CKASettings.check, after the schema (parse_job_config)


class FigureJob(_Job):
    title: str | None = None
    panels: list[list[list[str] | None]] = Field(min_length=1)
    output: FigureOutput = Field(default_factory=FigureOutput)

    @model_validator(mode="after")
    def _panels(self):
        labels = [m.label or m.name for m in self.models]
        for r, row in enumerate(self.panels):
            for c, cell in enumerate(row):
                if cell is None:
                    continue
                if len(cell) != 2:
                    raise ValueError(f"panels[{r}][{c}]: give a pair [row model, column model] or null")
                for label in cell:
                    if label not in labels:
                        raise ValueError(
                            f"panels[{r}][{c}]: {label!r} is not a model label; labels are {', '.join(labels)}"
                        )
        return self


class ZooJob(_Job):
    output: ZooOutput = Field(default_factory=ZooOutput)


class IdentifyAnalysis(Section):
    layers: str | list[str] = "activations"
    tokens: Tokens = "patch"
    layouts: dict[str, str] | list[str] = Field(default_factory=dict)
    checkpoint_key: CheckpointSelect = "auto"
    img_size: int | None = Field(None, ge=1)
    pools: list[Pool] = Field(default_factory=lambda: ["mean", "flatten"], min_length=1)
    estimator: Estimator = "full"
    unbiased: bool = False
    precision: Precision = "float64"
    device: DeviceName = "auto"

    _check_layouts = field_validator("layouts")(lambda value: _layouts(value))


class IdentifyCheckpoint(Section):
    checkpoint: str
    model: str | None = None
    label: str | None = None
    layers: str | list[str] | None = None


class IdentifyJob(Section):
    """``cka-probe identify CONFIG``: several checkpoints of one architecture (see
    :func:`cka_probe.jobs.identify.load_identify_config`)."""

    model: str | None = None
    checkpoints: list[str | IdentifyCheckpoint] = Field(min_length=1)
    data: DataSection = Field(default_factory=DataSection)
    analysis: IdentifyAnalysis = Field(default_factory=IdentifyAnalysis)


SCHEMAS = {"figure": FigureJob, "zoo": ZooJob}


@dataclass
class JobConfig:
    """A checked job configuration, defaults filled in: the schema's sections as typed values (read as
    ``config.analysis.pool``), each model's request and entry, and the CKA settings, checked once."""

    kind: str
    data: DataSection
    analysis: AnalysisSection
    models: list[ModelRequest]
    output: FigureOutput | ZooOutput
    cka: CKASettings
    entries: dict[str, ModelEntry] = field(default_factory=dict)
    cache: Any = None
    title: str | None = None
    panels: list[list[tuple[str, str] | None]] = field(default_factory=list)
    source: str | None = None
    raw: dict[str, Any] = field(default_factory=dict)

    def settings_for(self, label: str) -> FeatureSettings:
        """What to record of one model: its own layers, tokens and layouts where its entry gives them."""
        from ..engine.features import FeatureSettings

        entry, analysis = self.entries.get(label), self.analysis

        def own(key: str) -> Any:
            value = getattr(entry, key) if entry is not None else None
            return getattr(analysis, key) if value is None else value

        return FeatureSettings(
            layers=own("layers"),
            tokens=own("tokens"),
            pool=analysis.pool,
            layouts=tuple(own("layouts").items()),
            batch_size=self.data.batch_size,
            precision=analysis.precision,
        )

    def labels(self) -> list[str]:
        return [m.display for m in self.models]

    def output_header(self, features: dict, probe, device, seconds: dict[str, float]) -> dict[str, Any]:
        """The provenance header (:func:`~cka_probe.engine.provenance.output_header`) of a figure or zoo run of
        this job over ``features`` (label -> :class:`~cka_probe.engine.features.ExtractedFeatures`)."""
        from ..engine.estimation import number_formats, pooling_description
        from ..engine.features import model_provenance
        from ..engine.provenance import output_header

        settings, pool = self.cka, self.analysis.pool
        return output_header(
            models={label: model_provenance(ext) for label, ext in features.items()},
            data=probe.provenance(),
            n=probe.n,
            seed=self.data.seed,
            batch_size=self.data.batch_size or probe.n,
            layers={label: ext.layer_provenance() for label, ext in features.items()},
            pools=[pool],
            pooling=pooling_description(pool),
            tokens={label: self.settings_for(label).tokens for label in features},
            settings=settings.record(),
            dtype=number_formats([pool], settings.precision),
            device=str(device),
            seconds=seconds,
        )

    def digest(self) -> str:
        """Hash of everything that decides the results (not the output place, formats or labels)."""
        record = {k: v for k, v in self.raw.items() if k not in ("output", "title", "cache")}
        return sha256_text(json.dumps(record, sort_keys=True, default=str))


def load_job_config(path: str | Path, kind: str, overrides: Any = None) -> JobConfig:
    """Read a YAML job file (``yaml.safe_load``) and check it; ``overrides`` are ``key=value`` strings or
    a ``{dotted key: value}`` mapping (``data.n``)."""
    raw = read_yaml(path, f"{kind} config")
    config = parse_job_config(raw, kind, overrides, source=str(path))
    config.source = str(path)
    return config


def parse_job_config(raw: Any, kind: str, overrides: Any = None, source: str | None = None) -> JobConfig:
    """Check a configuration mapping (see the module docstring) and fill in defaults."""
    if kind not in SCHEMAS:
        raise ConfigError(f"unknown job kind {kind!r}; use figure or zoo")
    where = source or f"{kind} config"
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: a {kind} config must be a mapping of sections, got {type(raw).__name__}")
    raw = copy.deepcopy(raw)
    for dotted, value in parse_overrides(overrides or {}).items():
        set_dotted(raw, dotted, value)
    job = validate(SCHEMAS[kind], raw, where)
    cka = CKASettings(
        kernel=job.analysis.kernel,
        unbiased=job.analysis.unbiased,
        sigma_frac=job.analysis.sigma_frac,
        estimator=job.analysis.estimator,
        batch_size=job.data.batch_size,
        precision=job.analysis.precision,
    )
    try:  # the check compare runs, its message in this file's keys
        cka.check(job.data.n, JOB_KEYS)
        check_pooling(job.analysis.pool, cka, job.data.n, JOB_KEYS)
    except CKAProbeError as exc:
        raise type(exc)(f"{where}: {exc}") from None
    models, entries = [], {}
    for entry in job.models:
        from ..engine.features import ModelRequest

        request = ModelRequest.from_argument(
            entry.name,
            entry.checkpoint,
            weights=entry.weights or job.weights,
            label=entry.label,
            seed=job.data.seed if entry.seed is None else entry.seed,
            family=entry.family,
            checkpoint_select=entry.checkpoint_key,
            num_classes=entry.num_classes,
            img_size=entry.img_size,
        )
        models.append(request)
        entries[request.display] = entry
    panels = [[tuple(cell) if cell else None for cell in row] for row in getattr(job, "panels", [])]
    return JobConfig(
        kind=kind,
        data=job.data,
        analysis=job.analysis,
        models=models,
        output=job.output,
        cka=cka,
        entries=entries,
        cache=job.cache,
        title=getattr(job, "title", None),
        panels=panels,
        raw=raw,
    )
