"""Registering a tiny test network with timm, so the CLI and the loaders can build it by name."""

from __future__ import annotations

from collections.abc import Callable

import timm.models
from torch import nn


def register_tiny(name: str, make: Callable[[], nn.Module], input_size: tuple[int, int, int] = (3, 12, 12)) -> str:
    """Register ``make`` with timm under ``name`` (once), with a plain 12 px data config; returns ``name``."""

    def build(pretrained=False, **kwargs):
        model = make()
        model.pretrained_cfg = {
            "architecture": name,
            "input_size": input_size,
            "interpolation": "bilinear",
            "mean": (0.5,) * 3,
            "std": (0.25,) * 3,
            "crop_pct": 1.0,
            "crop_mode": "center",
        }
        return model

    build.__name__ = name
    if not timm.models.is_model(name):
        timm.models.register_model(build)
    return name
