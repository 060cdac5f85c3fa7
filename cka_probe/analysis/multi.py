"""Many models at once: each model's features computed once, then every pair's CKA in one vectorized pass."""

from __future__ import annotations

import traceback
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from .cache import FeatureCache
from .extract import ExtractedFeatures
from .features import FeatureSettings, ModelRequest, model_features

__all__ = ["ModelFailure", "features_for_models"]


@dataclass
class ModelFailure:
    """A model whose features could not be computed, and why."""

    label: str
    error: str
    kind: str

    def record(self) -> dict[str, str]:
        return {"label": self.label, "error": self.error, "error_type": self.kind}


def features_for_models(
    requests: Sequence[ModelRequest],
    probe,
    settings: dict[str, FeatureSettings],
    *,
    device: torch.device | str = "cpu",
    cache: FeatureCache | None = None,
    progress: bool = True,
    executor: str = "local",
    ray_address: str | None = None,
    probe_spec: dict[str, Any] | None = None,
) -> dict[str, ExtractedFeatures | ModelFailure]:
    """Each model's features on ``probe`` (one forward pass per model, none for cached ones).

    A model that cannot be built, loaded or run becomes a :class:`ModelFailure`; the others go on.

    Args:
        requests: the models.
        probe: the probe set every model sees.
        settings: per model label, what to record.
        device: where models run locally.
        cache: feature cache (``None``: none).
        progress: tqdm bars over models.
        executor: ``"local"`` (one model after another in this process) or ``"ray"``.
        ray_address: a running Ray cluster's address (``None`` starts a local Ray instance).
        probe_spec: the :func:`~cka_probe.data.load_probe_set` arguments of ``probe``, for Ray workers
            to load the same images themselves.
    """
    if executor == "ray":
        from .ray_executor import ray_features_for_models

        if probe_spec is None:
            from ..errors import CKAProbeError

            raise CKAProbeError("the Ray executor needs probe_spec, the load_probe_set arguments of the probe set")
        return ray_features_for_models(requests, probe, probe_spec, settings, cache=cache, address=ray_address,
                                       progress=progress)
    if executor != "local":
        from ..errors import CKAProbeError

        raise CKAProbeError(f"unknown executor {executor!r}; choose local or ray")
    results: dict[str, ExtractedFeatures | ModelFailure] = {}
    for request in tqdm(requests, desc="models", unit="model", disable=not progress):
        results[request.display] = safe_model_features(request, probe, settings[request.display], device=device,
                                                       cache=cache, progress=progress)
    return results


def safe_model_features(request: ModelRequest, probe, settings: FeatureSettings, **kwargs) -> ExtractedFeatures | ModelFailure:
    """:func:`model_features`, with a failure of this one model caught and described."""
    try:
        return model_features(request, probe, settings, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a zoo goes on past a model that cannot be built or run
        message = str(exc).splitlines()[0] if str(exc) else traceback.format_exception_only(exc)[-1].strip()
        return ModelFailure(label=request.display, error=message, kind=type(exc).__name__)


def model_provenance(extracted: ExtractedFeatures) -> dict[str, Any]:
    """The model record stored with its features (name, timm name, family, weights, ...)."""
    return dict(extracted.extra.get("model") or {})
