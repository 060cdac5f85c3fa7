"""Where many models' features are computed: one after another in this process, or one Ray task per model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from tqdm.auto import tqdm

from .._choices import EXECUTORS, one_of
from .._device import parse_device, resolve_device
from ..errors import CKAProbeError
from .cache import FeatureCache
from .features import ExtractedFeatures, FeatureSettings, ModelFailure, ModelRequest, record_device, safe_model_features

__all__ = ["EXECUTORS", "features_for_models"]


def features_for_models(
    requests: Sequence[ModelRequest],
    probe,
    settings: dict[str, FeatureSettings],
    *,
    device: torch.device | str = "auto",
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
        device: where the models run (``analysis.device``): a device name (``auto`` is resolved on the machine
            that runs each model: here, or each Ray worker) or a ``torch.device``. Each model's provenance
            records the device its features were computed on (``device``).
        cache: feature cache (``None``: none).
        progress: tqdm bars over models.
        executor: ``"local"`` (one model after another in this process) or ``"ray"``.
        ray_address: a running Ray cluster's address (``None`` starts a local Ray instance).
        probe_spec: the :func:`~cka_probe.data.load_probe_set` arguments of ``probe``, for Ray workers
            to load the same images themselves.
    """
    if executor not in EXECUTORS:
        raise CKAProbeError(f"unknown executor {executor!r}; choose --executor {one_of(EXECUTORS)}")
    if executor == "ray":
        from .ray_executor import ray_features_for_models

        if probe_spec is None:
            raise CKAProbeError("the Ray executor needs probe_spec, the load_probe_set arguments of the probe set")
        return ray_features_for_models(
            requests,
            probe,
            probe_spec,
            settings,
            cache=cache,
            address=ray_address,
            progress=progress,
            device=parse_device(device),
        )
    resolved = resolve_device(device)
    results: dict[str, ExtractedFeatures | ModelFailure] = {}
    for request in tqdm(requests, desc="models", unit="model", disable=not progress):
        results[request.display] = record_device(
            safe_model_features(
                request, probe, settings[request.display], device=resolved, cache=cache, progress=progress
            ),
            resolved,
        )
    return results
