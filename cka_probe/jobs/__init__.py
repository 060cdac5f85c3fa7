"""Orchestration: compare two models, draw figures, run zoos, save results with provenance.

Names are imported when first used (PEP 562), so that reading a config or a result does not load
timm, and ``import cka_probe.engine.estimation`` stays light.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "TOKEN_RULES": "comparison",
    "Side": "comparison",
    "compare": "comparison",
    "side_labels": "comparison",
    "ConfigError": "config",
    "JobConfig": "config",
    "load_job_config": "config",
    "parse_job_config": "config",
    "FigureResult": "figure",
    "figure_paths": "figure",
    "make_figure": "figure",
    "ZooResult": "zoo",
    "run_zoo": "zoo",
    "describe_model_layers": "layers",
    "FIGURE_FORMATS": "result",
    "CKAResult": "result",
    "output_paths": "result",
    "output_stem": "result",
    "diagonal_band_mean": "summary",
    "relative_depths": "summary",
}

__all__ = sorted(_PUBLIC)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
