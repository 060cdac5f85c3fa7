"""Models: names to timm models, their weights, each model's own preprocessing, and family facts.

Public API::

    from cka_probe.models import load_model, transform_for, list_models, register_alias

* :func:`load_model` builds a model from an alias (``vit_s``, ``mixer_b16``, ...) or any timm name, with
  pretrained, seeded-random or checkpoint weights, and returns a :class:`LoadedModel` with its timm data
  config and provenance.
* :func:`transform_for` gives the evaluation transform that model was trained with, so two models can see
  the same images, each prepared its own way.
* :data:`ALIASES` is the one alias table; :func:`register_alias` adds to it.
"""

from . import _swin  # noqa: F401  (registers Swin-Nano/Pico, sec. B.2 of OFA-KD, with timm and the alias table)
from ._checkpoint import (
    CHECKPOINT_KEYS,
    CheckpointKeysWarning,
    LoadedCheckpoint,
    load_checkpoint,
)
from ._load import WEIGHTS, LoadedModel, load_model, transform_for
from ._pretrained import create_pretrained
from ._registry import (
    ALIASES,
    FAMILIES,
    MODULE_FAMILIES,
    ModelSpec,
    family_of,
    list_models,
    register_alias,
    resolve_name,
)
from ._swin import SWIN_VARIANTS

__all__ = [
    "ALIASES",
    "CHECKPOINT_KEYS",
    "FAMILIES",
    "MODULE_FAMILIES",
    "SWIN_VARIANTS",
    "WEIGHTS",
    "CheckpointKeysWarning",
    "LoadedCheckpoint",
    "LoadedModel",
    "ModelSpec",
    "create_pretrained",
    "family_of",
    "list_models",
    "load_checkpoint",
    "load_model",
    "register_alias",
    "resolve_name",
    "transform_for",
]
