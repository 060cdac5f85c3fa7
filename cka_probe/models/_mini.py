"""A small MLP-Mixer for CPU-sized data, registered with timm on import.

timm's Mixer entry points fix the patch size, depth and width (``mixer_b16_224`` passes ``patch_size=16``,
``num_blocks=12`` and ``embed_dim=768`` itself, so overriding them is a ``TypeError``). Figure 6 of the
OFA-KD supplementary compares MobileNetV2, ViT-S and Mixer-B/16; to train members of all three families on
Fashion-MNIST on a CPU (``configs/train/``), the Mixer needs a smaller patch, width and depth while keeping
Mixer-B/16's block structure: pre-norm token-mixing and channel-mixing MLPs with GELU, ``mlp_ratio``
``(0.5, 4.0)``, a mean over tokens before the classifier. ``mixer_mini_patch4`` is that architecture with
defaults for 28 x 28 images (patch 4, 6 blocks, width 128), ``mixer_mini_patch7`` the same with patch 7
(16 tokens, the network ``configs/train/fmnist_mixer_b16.yaml`` trains); every
:class:`timm.models.mlp_mixer.MlpMixer` argument can be overridden
(``timm.create_model("mixer_mini_patch4", img_size=32, num_blocks=8)``). There are no pretrained weights;
the alias ``mixer_mini`` names the patch-4 network, family ``mlp``.

Example:
    >>> import timm
    >>> model = timm.create_model("mixer_mini_patch4", num_classes=10)
    >>> len(model.blocks), model.embed_dim, model.stem.num_patches
    (6, 128, 49)
    >>> timm.create_model("mixer_mini_patch7", num_classes=10).stem.num_patches
    16
    >>> from cka_probe.models import family_of
    >>> family_of("mixer_mini_patch4"), family_of("mixer_mini_patch7")
    ('mlp', 'mlp')
"""

from __future__ import annotations

from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.mlp_mixer import MlpMixer, checkpoint_filter_fn

from ..errors import ConfigError
from ._registry import register_alias

__all__ = ["MIXER_MINI", "mixer_mini_patch4", "mixer_mini_patch7"]

MIXER_MINI = {"img_size": 28, "patch_size": 4, "num_blocks": 6, "embed_dim": 128, "mlp_ratio": (0.5, 4.0)}
"""Defaults of ``mixer_mini_patch4``: Mixer-B/16's block structure at a CPU-trainable size."""

_CFG = {
    "url": "",
    "num_classes": 1000,
    "input_size": (3, 28, 28),
    "pool_size": None,
    "crop_pct": 1.0,
    "interpolation": "bilinear",
    "fixed_input_size": True,
    "mean": (0.5, 0.5, 0.5),
    "std": (0.5, 0.5, 0.5),
    "first_conv": "stem.proj",
    "classifier": "head",
}
default_cfgs = generate_default_cfgs({"mixer_mini_patch4": dict(_CFG), "mixer_mini_patch7": dict(_CFG)})


def _create_mixer_mini(variant: str, pretrained: bool, **kwargs) -> MlpMixer:
    if pretrained:
        raise ConfigError(f"{variant} has no pretrained weights; create it with pretrained=False")
    return build_model_with_cfg(
        MlpMixer,
        variant,
        pretrained=False,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg={"flatten_sequential": True, "feature_cls": "getter"},
        **dict(MIXER_MINI, **kwargs),
    )


@register_model
def mixer_mini_patch4(pretrained: bool = False, **kwargs) -> MlpMixer:
    """Mixer-B/16's block structure, patch 4, 6 blocks of width 128 on 28 x 28 images (overridable)."""
    return _create_mixer_mini("mixer_mini_patch4", pretrained, **kwargs)


@register_model
def mixer_mini_patch7(pretrained: bool = False, **kwargs) -> MlpMixer:
    """Mixer-B/16's block structure, patch 7 (16 tokens), 6 blocks of width 128 on 28 x 28 images (overridable)."""
    return _create_mixer_mini("mixer_mini_patch7", pretrained, **dict({"patch_size": 7}, **kwargs))


register_alias("mixer_mini", "mixer_mini_patch4", "mlp")
register_alias("mixer_mini_patch7", "mixer_mini_patch7", "mlp")  # its family (the module is not timm's)
