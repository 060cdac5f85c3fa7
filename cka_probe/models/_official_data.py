"""The evaluation data config of every student of the official OFA-KD code, as its runs resolved it.

The official ``train.py`` (github.com/Hao840/OFAKD) ran timm 0.6.5 and evaluated each student with
``resolve_data_config(vars(args), model=model)``: with its argument defaults (no ``--crop-pct``,
``--interpolation``, ``--mean``, ``--std`` or ``--input-size``), that is the student's own timm 0.6.5
``default_cfg``. timm 1.0 gives some of these models other configs (``resnet18``: crop 0.95, bicubic,
from its ``a1_in1k`` weights), so the values are kept here as data rather than read from the installed
timm. ``eval_preprocessing: official`` (:func:`cka_probe.models.eval_data_config`) uses them.
"""

from __future__ import annotations

import argparse
from typing import Any

from ..errors import ConfigError
from ._registry import resolve_name

__all__ = ["OFFICIAL_EVAL_CONFIGS", "official_eval_config", "official_run_settings"]

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_INCEPTION = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

OFFICIAL_EVAL_CONFIGS: dict[str, tuple[float, str, tuple[tuple[float, ...], tuple[float, ...]]]] = {
    # Source: timm 0.6.5. Each model the official code has a stage_info() for (custom_forward/), created by
    # timm 0.6.5 with pretrained=False (Swin-Nano/Pico and BEiT v2 registered as the official custom_model/
    # does), then resolve_data_config() with the official train.py's argument defaults. Input size 224 x 224
    # for every one. timm 1.0.31 differs for resnet18 and resnet34 (0.95, bicubic) and for convnext_tiny and
    # convnext_base (0.95).
    # timm name: (crop_pct, interpolation, (mean, std))
    "resnet18": (0.875, "bilinear", _IMAGENET),
    "resnet34": (0.875, "bilinear", _IMAGENET),
    "resnet50": (0.95, "bicubic", _IMAGENET),
    "resnet101": (0.95, "bicubic", _IMAGENET),
    "mobilenetv2_100": (0.875, "bicubic", _IMAGENET),
    "deit_tiny_patch16_224": (0.9, "bicubic", _IMAGENET),
    "vit_small_patch16_224": (0.9, "bicubic", _INCEPTION),
    "vit_base_patch16_224": (0.9, "bicubic", _INCEPTION),
    "swin_tiny_patch4_window7_224": (0.9, "bicubic", _IMAGENET),
    "swin_base_patch4_window7_224": (0.9, "bicubic", _IMAGENET),
    "swin_nano_patch4_window7_224": (0.9, "bicubic", _IMAGENET),
    "swin_pico_patch4_window7_224": (0.9, "bicubic", _IMAGENET),
    "mixer_b16_224": (0.875, "bicubic", _INCEPTION),
    "resmlp_12_224": (0.875, "bicubic", _IMAGENET),
    "convnext_tiny": (0.875, "bicubic", _IMAGENET),
    "convnext_base": (0.875, "bicubic", _IMAGENET),
    "beitv2_base_patch16_224": (0.9, "bicubic", _IMAGENET),
    "beitv2_large_patch16_224": (0.9, "bicubic", _IMAGENET),
}
"""``(crop_pct, interpolation, (mean, std))`` of each student of the official code, as timm 0.6.5 resolved them."""


def official_eval_config(student: str) -> tuple[float, str, tuple[tuple[float, ...], tuple[float, ...]]]:
    """``(crop_pct, interpolation, (mean, std))`` the official OFA-KD runs evaluated ``student`` with.

    Args:
        student: an alias or timm name (a pretrained tag is ignored).

    Raises:
        ConfigError: the official code has no such student; the message names the students it has and the fix.

    Example:
        >>> official_eval_config("resnet18")[:2]
        (0.875, 'bilinear')
    """
    name = resolve_name(student).timm_name.split(".")[0]
    if name not in OFFICIAL_EVAL_CONFIGS:
        raise ConfigError(
            f"eval_preprocessing official knows the official OFA-KD code's students only "
            f"({', '.join(OFFICIAL_EVAL_CONFIGS)}), not {name!r}; use --set eval_preprocessing=student "
            "(timm's current config) or eval_preprocessing=recipe"
        )
    return OFFICIAL_EVAL_CONFIGS[name]


def official_run_settings(args: Any, student: str) -> dict[str, Any] | None:
    """How an official OFA-KD ``train.py`` run evaluated, from the ``args`` its checkpoint keeps: the keyword
    arguments of :func:`~cka_probe.models.eval_data_config` (its data set; timm 0.6.5's data config of its
    student, with the run's own ``--img-size``, ``--crop-pct`` and ``--interpolation`` over it, as timm 0.6.5's
    ``resolve_data_config`` ranks them). ``None`` for any other file (timm's own ``train.py`` has no
    ``--distiller``) and for a student the official code does not build.

    Example:
        >>> from argparse import Namespace
        >>> args = Namespace(model="resnet18", distiller="ofa", dataset="", img_size=None, crop_pct=None,
        ...                  interpolation="")
        >>> settings = official_run_settings(args, "resnet18")
        >>> settings["dataset"], settings["eval_preprocessing"], settings["img_size"]
        ('imagenet', 'official', 224)
        >>> official_run_settings(Namespace(**{**vars(args), "interpolation": "bicubic"}), "resnet18")["interpolation"]
        'bicubic'
    """
    if not isinstance(args, argparse.Namespace) or not hasattr(args, "distiller"):
        return None
    name = resolve_name(student).timm_name.split(".")[0]
    if name not in OFFICIAL_EVAL_CONFIGS:
        return None
    fraction, interpolation, _ = OFFICIAL_EVAL_CONFIGS[name]
    settings = {
        "dataset": "cifar100" if getattr(args, "dataset", "") == "cifar100" else "imagenet",
        "img_size": int(getattr(args, "img_size", None) or 224),  # every official student's input is 224
        "crop_pct": None,
        "interpolation": interpolation,
        "eval_preprocessing": "official",
        "student": name,
    }
    crop_pct, chosen = getattr(args, "crop_pct", None), getattr(args, "interpolation", "")
    if crop_pct or chosen:  # the run's own options win over the pretrained config
        settings.update(
            eval_preprocessing="recipe", crop_pct=float(crop_pct or fraction), interpolation=chosen or interpolation
        )
    return settings
