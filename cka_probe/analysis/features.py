"""Per-model features on a probe set, through the cache: a model's forward pass runs once per key."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .._files import sha256_file_checked
from ..errors import CKAProbeError
from .cache import FeatureCache, feature_key
from .estimation import minibatch_bounds
from .extract import ExtractedFeatures, extract_features

__all__ = ["FeatureSettings", "ModelRequest", "model_features", "resolve_cache"]


@dataclass(frozen=True)
class ModelRequest:
    """A model as a job names it.

    Attributes:
        name: alias or timm name.
        weights: ``"pretrained"`` or ``"random"`` (a checkpoint overrides it).
        checkpoint: local weights file, or ``None``.
        seed: initialisation seed of random weights.
        label: how tables and figures call it (default: ``name``).
        family: family label overriding the registry's (``cnn``, ``vit``, ``mlp``, ``hybrid``).
        checkpoint_select: which weights of a training checkpoint: ``auto``, ``student`` or ``ema``.
        num_classes: classifier size (``None``: ImageNet's, or the checkpoint's own).
    """

    name: str
    weights: str = "pretrained"
    checkpoint: str | None = None
    seed: int = 0
    label: str | None = None
    family: str | None = None
    checkpoint_select: str = "auto"
    num_classes: int | None = None

    @classmethod
    def from_argument(cls, name_or_path: str, checkpoint: str | None = None, **kwargs: Any) -> ModelRequest:
        """A request from what a user typed: a model name, or a training checkpoint that records its model."""
        from ..models import name_and_checkpoint

        name, checkpoint = name_and_checkpoint(name_or_path, checkpoint)
        return cls(name, checkpoint=checkpoint, label=kwargs.pop("label", None) or name_or_path, **kwargs)

    @property
    def display(self) -> str:
        return self.label or self.name

    def key_record(self) -> dict[str, Any]:
        """What identifies this model's weights without building it (or downloading anything).

        ``checkpoint_sha256`` is the SHA-256 of a checkpoint; ``pretrained`` the pretrained tag timm resolves
        the name to, where the weights come from and the SHA-256 of their local file when it is in the hub
        cache (see :func:`cka_probe.models.pretrained_record`).
        """
        from ..models import pretrained_record, resolve_name

        spec = resolve_name(self.name)
        checkpoint_sha = sha256_file_checked(self.checkpoint) if self.checkpoint else None
        weights = "checkpoint" if self.checkpoint else self.weights
        return {
            "name": self.name,
            "timm_name": spec.timm_name,
            "weights": weights,
            "checkpoint_sha256": checkpoint_sha,
            "checkpoint_select": self.checkpoint_select if self.checkpoint else None,
            "num_classes": self.num_classes,
            "pretrained": pretrained_record(spec.timm_name) if weights == "pretrained" else None,
            "seed": self.seed if weights == "random" else None,
        }


@dataclass(frozen=True)
class FeatureSettings:
    """What decides the recorded features besides the model and the images."""

    layers: Any = "activations"
    tokens: str = "patch"
    pool: str = "mean"
    layouts: tuple[tuple[str, str], ...] = ()
    batch_size: int | None = None

    def record(self) -> dict[str, Any]:
        layers = self.layers if isinstance(self.layers, str) else list(self.layers)
        return {
            "layers": layers,
            "tokens": self.tokens,
            "pool": self.pool,
            "layouts": [list(p) for p in self.layouts],
            "batch_size": self.batch_size,
        }


def resolve_cache(cache: FeatureCache | str | Path | bool | None) -> FeatureCache | None:
    """``True``: the default cache directory; a path: that directory; ``False``/``None``: no cache.

    The directory is checked for writing here, so that a bad one fails before any model runs.
    """
    if cache is False or cache is None:
        return None
    store = cache if isinstance(cache, FeatureCache) else FeatureCache(None if cache is True else cache)
    store.check_writable()
    return store


def model_features(
    request: ModelRequest,
    probe,
    settings: FeatureSettings,
    *,
    device: torch.device | str = "cpu",
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> ExtractedFeatures:
    """The pooled features of ``request``'s model on ``probe``: from the cache, or computed (and cached).

    ``extra["model"]`` holds the model's provenance, ``extra["cached"]`` whether the pass was skipped.
    """
    from ..data import batches
    from ..models import load_model, transform_for

    key = feature_key(request.key_record(), probe.provenance(), settings.record()) if cache is not None else None
    if key is not None:
        hit = cache.load(key)
        if hit is not None:
            return hit.to(device)
    loaded = load_model(
        request.name, weights=request.weights, checkpoint=request.checkpoint, seed=request.seed, device=device,
        checkpoint_select=request.checkpoint_select, num_classes=request.num_classes,
    )
    extracted = extract_features(
        loaded.model,
        (images for images, _ in batches(probe, transform_for(loaded), bounds=minibatch_bounds(probe.n,
                                                                                               settings.batch_size))),
        layers=settings.layers,
        tokens=settings.tokens,
        pool=settings.pool,
        layouts=dict(settings.layouts) or None,
        device=device,
        total=probe.n,
        desc=request.display,
        progress=progress,
    )
    if extracted.n != probe.n:
        raise CKAProbeError(f"{request.display} saw {extracted.n} images instead of {probe.n}")
    provenance = loaded.provenance()
    if request.family:
        provenance["family"] = request.family
    extracted.extra.update({"model": provenance, "cached": False})
    if key is not None:
        # pretrained weights downloaded just now have a local file to hash: store under the key that names it
        key = feature_key(request.key_record(), probe.provenance(), settings.record())
        extracted.extra["cache"] = str(cache.save(key, extracted))
    del loaded
    return extracted
