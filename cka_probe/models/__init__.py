"""Models: names to timm models, their weights, each model's own preprocessing, and family facts.

Public API::

    from cka_probe.models import load_model, transform_for, list_models, register_alias

* :func:`load_model` builds a model from an alias (``vit_s``, ``mixer_b16``, ...) or any timm name, with
  pretrained, seeded-random or checkpoint weights, and returns a :class:`LoadedModel` with its timm data
  config and provenance.
* :func:`transform_for` gives the evaluation transform that model was trained with, so two models can see
  the same images, each prepared its own way: for a ``cka-probe train`` checkpoint, the run's own
  (:func:`eval_data_config` of its recorded recipe).
* :data:`ALIASES` is the one alias table; :func:`register_alias` adds to it.
"""

from . import _mini, _swin  # noqa: F401  (register Swin-Nano/Pico, sec. B.2 of OFA-KD, and a small Mixer with timm)
from ._checkpoint import (
    CHECKPOINT_KEYS,
    CHECKPOINT_SELECT,
    EMA_KEYS,
    SAFE_GLOBALS,
    CheckpointKeysWarning,
    LoadedCheckpoint,
    SelectedState,
    checkpoint_model_name,
    checkpoint_num_classes,
    load_checkpoint,
    read_checkpoint,
    select_state_dict,
)
from ._load import (
    MODEL_WEIGHTS,
    LoadedModel,
    load_model,
    model_from_checkpoint,
    name_and_checkpoint,
    transform_for,
)
from ._pretrained import create_pretrained, pretrained_record
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
from ._run import RunRecord, checkpoint_label, eval_data_config
from ._swin import SWIN_VARIANTS

__all__ = [
    "ALIASES",
    "CHECKPOINT_KEYS",
    "CHECKPOINT_SELECT",
    "EMA_KEYS",
    "FAMILIES",
    "MODULE_FAMILIES",
    "SAFE_GLOBALS",
    "SWIN_VARIANTS",
    "MODEL_WEIGHTS",
    "CheckpointKeysWarning",
    "LoadedCheckpoint",
    "LoadedModel",
    "ModelSpec",
    "RunRecord",
    "SelectedState",
    "checkpoint_label",
    "checkpoint_model_name",
    "checkpoint_num_classes",
    "create_pretrained",
    "eval_data_config",
    "family_of",
    "pretrained_record",
    "list_models",
    "load_checkpoint",
    "load_model",
    "model_from_checkpoint",
    "name_and_checkpoint",
    "read_checkpoint",
    "register_alias",
    "resolve_name",
    "select_state_dict",
    "transform_for",
]
