"""Orchestration: compare two models, describe their layers, save results with provenance."""

from .cache import FeatureCache
from .compare import ESTIMATORS, TOKEN_RULES, compare
from .config import ConfigError, JobConfig, load_job_config, parse_job_config
from .figure import FigureResult, figure_paths, make_figure
from .zoo import ZooResult, run_zoo
from .extract import ExtractedFeatures, extract_features, resolve_device
from .layers import describe_model_layers
from .result import FIGURE_FORMATS, CKAResult, output_paths, output_stem
from .summary import diagonal_band_mean, relative_depths

__all__ = [
    "ESTIMATORS",
    "FIGURE_FORMATS",
    "TOKEN_RULES",
    "CKAResult",
    "ConfigError",
    "FeatureCache",
    "FigureResult",
    "ZooResult",
    "run_zoo",
    "JobConfig",
    "figure_paths",
    "load_job_config",
    "make_figure",
    "parse_job_config",
    "ExtractedFeatures",
    "compare",
    "describe_model_layers",
    "diagonal_band_mean",
    "extract_features",
    "output_paths",
    "output_stem",
    "relative_depths",
    "resolve_device",
]
