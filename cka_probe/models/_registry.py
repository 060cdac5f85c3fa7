"""Model names: cka-probe's short aliases, timm's registry behind them, and each model's family.

The alias table is one dict, :data:`ALIASES`; other modules add to it with :func:`register_alias`
(for instance after registering a custom architecture with ``timm.models.register_model``).

A family is one of ``"cnn"``, ``"vit"``, ``"mlp"``, ``"hybrid"`` or ``"unknown"``. An alias carries its
family explicitly; any other timm name gets the family of the timm module that defines it
(:data:`MODULE_FAMILIES`), or ``"unknown"`` when that module is not in the table.
"""

from __future__ import annotations

import difflib
import fnmatch
from dataclasses import dataclass

import timm
import timm.models

from .._choices import FAMILIES
from ..errors import ArgumentError, UnknownModelError

__all__ = [
    "ALIASES",
    "FAMILIES",
    "MODULE_FAMILIES",
    "ModelSpec",
    "family_of",
    "list_models",
    "register_alias",
    "resolve_name",
]


@dataclass(frozen=True)
class ModelSpec:
    """What a model name resolves to.

    Attributes:
        name: The name as given.
        timm_name: The timm model name (architecture, optionally ``.tag`` for one pretrained variant).
        family: ``"cnn"``, ``"vit"``, ``"mlp"``, ``"hybrid"`` or ``"unknown"``.
    """

    name: str
    timm_name: str
    family: str


#: alias -> (timm name, family). The models of the OFA-KD paper's CKA analysis and their neighbours.
ALIASES: dict[str, tuple[str, str]] = {
    "mobilenetv2": ("mobilenetv2_100", "cnn"),
    "resnet18": ("resnet18", "cnn"),
    "resnet50": ("resnet50", "cnn"),
    "convnext_t": ("convnext_tiny", "cnn"),
    "vit_s": ("vit_small_patch16_224", "vit"),
    "vit_b": ("vit_base_patch16_224", "vit"),
    "deit_t": ("deit_tiny_patch16_224", "vit"),
    "deit_s": ("deit_small_patch16_224", "vit"),
    "swin_t": ("swin_tiny_patch4_window7_224", "vit"),
    "mixer_b16": ("mixer_b16_224", "mlp"),
    "resmlp_s12": ("resmlp_12_224", "mlp"),
}

#: timm module (``timm.models.<module>``) -> family, for modules all of whose models share one family.
#: ``hybrid`` marks networks that mix convolution stages or convolutional token mixers with attention.
MODULE_FAMILIES: dict[str, str] = {
    **dict.fromkeys(
        (
            "byobnet",
            "convmixer",
            "convnext",
            "cspnet",
            "cspnext",
            "densenet",
            "dla",
            "dpn",
            "efficientnet",
            "fasternet",
            "ghostnet",
            "hardcorenas",
            "hgnet",
            "hrnet",
            "inception_next",
            "inception_resnet_v2",
            "inception_v3",
            "inception_v4",
            "lcnetv2",
            "mambaout",
            "mobilenetv3",
            "nasnet",
            "nfnet",
            "pnasnet",
            "rdnet",
            "regnet",
            "repghost",
            "repvit",
            "res2net",
            "resnest",
            "resnet",
            "resnetv2",
            "rexnet",
            "selecsls",
            "senet",
            "sknet",
            "starnet",
            "tresnet",
            "vgg",
            "vovnet",
            "xception",
            "xception_aligned",
        ),
        "cnn",
    ),
    **dict.fromkeys(
        (
            "beit",
            "cait",
            "crossvit",
            "davit",
            "deepseek_vit",
            "deit",
            "eva",
            "gemma4_vit",
            "hiera",
            "hieradet_sam2",
            "mvitv2",
            "naflexvit",
            "nest",
            "pit",
            "pvt_v2",
            "qwen3_vit",
            "swin_transformer",
            "swin_transformer_v2",
            "swin_transformer_v2_cr",
            "tnt",
            "twins",
            "vision_transformer",
            "vision_transformer_relpos",
            "vision_transformer_sam",
            "volo",
            "xcit",
        ),
        "vit",
    ),
    "mlp_mixer": "mlp",  # MLP-Mixer, ResMLP, gMLP
    **dict.fromkeys(
        (
            "byoanet",
            "coat",
            "convit",
            "edgenext",
            "efficientformer",
            "efficientformer_v2",
            "efficientvit_mit",
            "efficientvit_msra",
            "fastvit",
            "gcvit",
            "iformer",
            "levit",
            "lowformer",
            "maxxvit",
            "mobilenetv5",
            "mobilevit",
            "nextvit",
            "shvit",
            "swiftformer",
            "tiny_vit",
            "visformer",
            "vision_transformer_hybrid",
            "vitamin",
        ),
        "hybrid",
    ),
}


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise ArgumentError(f"unknown family {family!r}; use one of {', '.join(FAMILIES)}")


def register_alias(alias: str, timm_name: str, family: str, *, overwrite: bool = False) -> None:
    """Add a short name for a timm model, with its family.

    The timm name is checked when the alias is used, so an alias may be registered before the module
    that registers its architecture with timm is imported.

    Args:
        alias: The short name, e.g. ``"swin_n"``.
        timm_name: The timm model name it stands for, e.g. a custom ``"swin_nano_patch4_window7_224"``.
        family: ``"cnn"``, ``"vit"``, ``"mlp"``, ``"hybrid"`` or ``"unknown"``.
        overwrite: Replace an alias that already points elsewhere (otherwise that is an error).

    Raises:
        ArgumentError: The family is not one of the five, the alias is empty, or it already points elsewhere.

    Example:
        >>> register_alias("resnet18", "resnet18", "cnn")  # same target again: a no-op
        >>> resolve_name("resnet18").family
        'cnn'
    """
    _check_family(family)
    if not alias or alias != alias.strip():
        raise ArgumentError(f"alias {alias!r} must be a non-empty name without surrounding spaces")
    previous = ALIASES.get(alias)
    if previous is not None and previous != (timm_name, family) and not overwrite:
        raise ArgumentError(
            f"alias {alias!r} already points to {previous[0]} ({previous[1]}); pass overwrite=True to replace it"
        )
    ALIASES[alias] = (timm_name, family)


def family_of(timm_name: str) -> str:
    """The family of a timm model: from the alias table if a registered alias targets it, else from its timm module.

    Args:
        timm_name: A timm model name, with or without a pretrained tag.

    Returns:
        ``"cnn"``, ``"vit"``, ``"mlp"``, ``"hybrid"``, or ``"unknown"`` when the module is not in
        :data:`MODULE_FAMILIES` (or the name is not a timm model).

    Example:
        >>> family_of("mixer_b16_224"), family_of("vit_small_patch16_224.augreg_in21k"), family_of("test_resnet")
        ('mlp', 'vit', 'cnn')
    """
    arch = timm.models.get_arch_name(timm_name)
    for target, family in ALIASES.values():
        if timm.models.get_arch_name(target) == arch:
            return family
    if not timm.models.is_model(arch):
        return "unknown"
    module = timm.models.model_entrypoint(arch).__module__
    if not module.startswith("timm.models."):
        return "unknown"
    return MODULE_FAMILIES.get(module.rsplit(".", 1)[-1], "unknown")


def list_models(pattern: str | None = None) -> list[str]:
    """Aliases, then timm model names, that match a shell-style pattern.

    Args:
        pattern: A glob such as ``"vit_*"``; ``None`` lists everything.

    Returns:
        Matching aliases (sorted) followed by matching timm architecture names (timm's order), without duplicates.

    Example:
        >>> list_models("resmlp_*")[:3]
        ['resmlp_s12', 'resmlp_12_224', 'resmlp_24_224']
    """
    aliases = sorted(a for a in ALIASES if pattern is None or fnmatch.fnmatchcase(a, pattern))
    seen = set(aliases)
    names = [m for m in timm.list_models(pattern or "") if m not in seen]
    return aliases + names


def _unknown(name: str, candidates: list[str], what: str = "model") -> UnknownModelError:
    candidates = list(dict.fromkeys(candidates))  # an alias may also be a timm name (resnet18): suggest it once
    close = difflib.get_close_matches(name.lower(), candidates, n=4, cutoff=0.6)
    hint = f"did you mean {', '.join(close)}?" if close else "no close name found;"
    return UnknownModelError(
        f"unknown {what} {name!r}: {hint} list the names with 'cka-probe models PATTERN' (cka_probe.models.list_models)"
    )


def resolve_name(name: str) -> ModelSpec:
    """Turn an alias or a timm model name (optionally ``arch.tag``) into a :class:`ModelSpec`.

    Args:
        name: An alias from :data:`ALIASES` or any timm model name; matched as given, then in lower case.

    Returns:
        The spec with the timm name and the family.

    Raises:
        UnknownModelError: Neither an alias nor a timm model, or an unknown pretrained tag;
            the message suggests the closest names.

    Example:
        >>> resolve_name("vit_s")
        ModelSpec(name='vit_s', timm_name='vit_small_patch16_224', family='vit')
    """
    key = name.strip()
    if key not in ALIASES and key.lower() in ALIASES:
        key = key.lower()
    if key in ALIASES:
        timm_name, family = ALIASES[key]
        if not timm.models.is_model(timm_name):
            raise UnknownModelError(
                f"alias {key!r} points to {timm_name!r}, which timm does not know; "
                "import the module that registers it with timm before loading"
            )
        return ModelSpec(name=name, timm_name=timm_name, family=family)
    key = key.lower()
    arch, tag = timm.models.split_model_name_tag(key)
    if not timm.models.is_model(arch):
        raise _unknown(key, list(ALIASES) + timm.list_models())
    if tag and key not in timm.models.get_arch_pretrained_cfgs(arch):
        raise _unknown(key, list(timm.models.get_arch_pretrained_cfgs(arch)), what="pretrained tag")
    return ModelSpec(name=name, timm_name=key, family=family_of(key))
