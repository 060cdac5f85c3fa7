"""Swin-Nano and Swin-Pico (Hao et al. 2023, sec. B.2), registered with timm on import.

Two smaller Swin-Tiny variants the paper introduces so that teachers outperform students:
patch 4, window 7, depths ``(2, 2, 2, 2)`` and heads ``(2, 4, 8, 16)``, with embedding width 64
(Nano) or 48 (Pico), against Swin-Tiny's 96, ``(2, 2, 6, 2)`` and ``(3, 6, 12, 24)``.

Importing :mod:`cka_probe.models` imports this module, so ``timm.create_model("swin_nano_patch4_window7_224")``
works afterwards, and the aliases ``swin_n`` / ``swin_p`` resolve; ``import cka_probe`` alone does not (the
package root is lazy: it imports no timm). There are no pretrained weights.

Example:
    >>> import timm
    >>> timm.is_model("swin_pico_patch4_window7_224"), SWIN_VARIANTS["swin_pico_patch4_window7_224"]["embed_dim"]
    (True, 48)
"""

from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.swin_transformer import SwinTransformer, checkpoint_filter_fn

from ..errors import ConfigError
from ._registry import register_alias

__all__ = [
    "SWIN_VARIANTS",
    "swin_nano_patch4_window7_224",
    "swin_pico_patch4_window7_224",
]

SWIN_VARIANTS = {
    "swin_nano_patch4_window7_224": {
        "patch_size": 4,
        "window_size": 7,
        "embed_dim": 64,
        "depths": (2, 2, 2, 2),
        "num_heads": (2, 4, 8, 16),
    },
    "swin_pico_patch4_window7_224": {
        "patch_size": 4,
        "window_size": 7,
        "embed_dim": 48,
        "depths": (2, 2, 2, 2),
        "num_heads": (2, 4, 8, 16),
    },
}
"""Architecture arguments of each variant (sec. B.2)."""


def _cfg() -> dict:
    return {
        "url": "",
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "pool_size": (7, 7),
        "crop_pct": 0.9,
        "interpolation": "bicubic",
        "fixed_input_size": True,
        "mean": IMAGENET_DEFAULT_MEAN,
        "std": IMAGENET_DEFAULT_STD,
        "first_conv": "patch_embed.proj",
        "classifier": "head.fc",
    }


default_cfgs = generate_default_cfgs({name: _cfg() for name in SWIN_VARIANTS})


def _create(variant: str, pretrained: bool, **kwargs) -> SwinTransformer:
    if pretrained:
        raise ConfigError(f"{variant} has no pretrained weights; create it with pretrained=False")
    model_args = dict(SWIN_VARIANTS[variant], **kwargs)
    out_indices = model_args.pop("out_indices", tuple(range(len(model_args["depths"]))))
    return build_model_with_cfg(
        SwinTransformer,
        variant,
        pretrained=False,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg={"flatten_sequential": True, "out_indices": out_indices},
        **model_args,
    )


@register_model
def swin_nano_patch4_window7_224(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-Nano @ 224x224: embed 64, depths (2, 2, 2, 2), heads (2, 4, 8, 16) (OFA-KD, sec. B.2)."""
    return _create("swin_nano_patch4_window7_224", pretrained, **kwargs)


@register_model
def swin_pico_patch4_window7_224(pretrained: bool = False, **kwargs) -> SwinTransformer:
    """Swin-Pico @ 224x224: embed 48, depths (2, 2, 2, 2), heads (2, 4, 8, 16) (OFA-KD, sec. B.2)."""
    return _create("swin_pico_patch4_window7_224", pretrained, **kwargs)


register_alias("swin_n", "swin_nano_patch4_window7_224", "vit")
register_alias("swin_p", "swin_pico_patch4_window7_224", "vit")
