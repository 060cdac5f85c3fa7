"""One model's pass over the probe images: pooled features of every recorded layer, and what was recorded."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from tqdm.auto import tqdm

from .._device import resolve_device
from ..capture import FeatureRecorder, LayerInfo

__all__ = ["ExtractedFeatures", "extract_features", "resolve_device"]


@dataclass
class ExtractedFeatures:
    """What one model's pass recorded, layer names in forward order, and layer facts.

    ``features`` maps each layer to its pooled ``(n, C)`` float32 features, or, with ``pool="flatten"``,
    to a list of ``(b_k, b_k)`` float64 Grams of the batches' centred, flattened activations (one per
    forward batch, in order): the activations themselves are never held.
    """

    features: dict[str, torch.Tensor | list[torch.Tensor]]
    layers: list[LayerInfo]
    n: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> ExtractedFeatures:
        """Move every recorded tensor (features or Grams) to ``device``, in place; returns ``self``."""
        self.features = {name: value.to(device) if isinstance(value, torch.Tensor) else [g.to(device) for g in value]
                         for name, value in self.features.items()}
        return self

    def layer_provenance(self) -> list[dict[str, Any]]:
        return [
            {"name": info.name, "module": info.module_name, "type": info.module_type, "layout": info.layout,
             "layout_rule": info.layout_source, "prefix_tokens": info.prefix_tokens,
             "raw_shape": list(info.raw_shape[1:]), "pooled_dim": info.pooled_dim}
            for info in self.layers
        ]


def extract_features(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    layers: Any = "activations",
    tokens: str = "patch",
    layouts: Mapping[str, str] | None = None,
    pool: str = "mean",
    device: torch.device | str = "cpu",
    total: int | None = None,
    desc: str | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
) -> ExtractedFeatures:
    """Run ``model`` over ``batches`` under ``torch.inference_mode`` and record pooled features.

    Args:
        model: the network, in eval mode, on ``device``.
        batches: input tensors ``(b, 3, H, W)`` (already prepared for this model), in the probe order.
        layers, tokens, layouts, pool: as in :class:`~cka_probe.capture.FeatureRecorder`.
        device: where the batches are moved; the features stay there.
        total: number of images, for the progress bar.
        desc: progress bar label.
        progress: show a tqdm bar over images.
        autocast_dtype: run the forward under autocast with this dtype (features are pooled in float32).

    Returns:
        :class:`ExtractedFeatures`.
    """
    device = torch.device(device)
    start = time.perf_counter()
    recorder = FeatureRecorder(model, layers=layers, pool=pool, tokens=tokens, layouts=layouts)
    seen = 0
    with recorder, torch.inference_mode(), tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar:
        for batch in batches:
            batch = batch.to(device, non_blocking=True)
            if autocast_dtype is not None:
                with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                    model(batch)
            else:
                model(batch)
            seen += len(batch)
            bar.update(len(batch))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return ExtractedFeatures(
        features=recorder.grams if recorder.pool == "flatten" else recorder.features,
        layers=recorder.describe(),
        n=seen,
        seconds=time.perf_counter() - start,
    )
