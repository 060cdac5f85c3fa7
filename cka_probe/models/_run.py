"""What a ``cka-probe train`` run records of itself: the model it trained and the input pipeline it was evaluated with.

A run's checkpoint holds its whole config (``config``, :meth:`cka_probe.ofa.TrainConfig.to_dict`): the
student's timm name and ``student_kwargs`` (passed to ``timm.create_model`` beside ``num_classes``), and its
evaluation recipe (``dataset``, ``img_size``, ``crop_pct``, ``interpolation``, ``eval_preprocessing``).
Every reader rebuilds exactly that: :func:`~cka_probe.models.load_model` builds the student with its kwargs,
and the run's evaluation data config (:func:`eval_data_config`, the one the trainer's evaluation transform is
made from) becomes the model's ``data_config``, so :func:`~cka_probe.models.transform_for` prepares images as
the run's own validation did.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import CheckpointError

__all__ = [
    "DATASET_STATS",
    "RunRecord",
    "checkpoint_label",
    "eval_data_config",
    "run_record",
    "student_eval_options",
]

DATASET_STATS = {
    # (mean, std) per RGB channel; Fashion-MNIST's grey statistics repeated over the three channels.
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "cifar100": ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762)),
    "fashion_mnist": ((0.2860, 0.2860, 0.2860), (0.3530, 0.3530, 0.3530)),
}
"""Normalisation of each training data set a run may use."""

#: The settings of a run's config that decide its evaluation transform.
EVAL_KEYS = ("dataset", "img_size", "crop_pct", "interpolation", "eval_preprocessing", "student")

#: The entries of a timm data config, as a run records the one it evaluated with (``eval_transform``).
DATA_CONFIG_KEYS = ("input_size", "crop_pct", "crop_mode", "interpolation", "mean", "std")


def student_eval_options(student: str) -> dict[str, Any]:
    """Crop fraction, crop mode and interpolation of a timm model's pretrained config (its evaluation recipe)."""
    import timm.models

    from ._registry import resolve_name

    cfg = timm.models.get_pretrained_cfg(resolve_name(student).timm_name)
    if cfg is None:
        return {"crop_pct": 0.875, "interpolation": "bicubic"}
    return {"crop_pct": cfg.crop_pct, "crop_mode": cfg.crop_mode, "interpolation": cfg.interpolation}


def eval_data_config(
    *,
    dataset: str,
    img_size: int,
    crop_pct: float | None,
    interpolation: str,
    eval_preprocessing: str,
    student: str,
) -> dict[str, Any]:
    """The timm data config of a run's evaluation transform: ``timm.data.create_transform(**config)``.

    Resize and centre crop to ``img_size`` (crop fraction ``crop_pct``; ``None``: 0.875 for ImageNet, 1.0
    otherwise), normalised with the data set's mean and std. With ``eval_preprocessing="student"`` the crop
    fraction, crop mode and interpolation are the student's own timm pretrained config's; with ``"official"``
    those the official OFA-KD runs resolved with timm 0.6.5, and on ImageNet its mean and std too
    (:data:`~cka_probe.models._official_data.OFFICIAL_EVAL_CONFIGS`).

    >>> eval_data_config(dataset="fashion_mnist", img_size=32, crop_pct=None, interpolation="bilinear",
    ...                  eval_preprocessing="recipe", student="resnet18")["input_size"]
    (3, 32, 32)
    """
    mean, std = DATASET_STATS[dataset]
    if eval_preprocessing == "student":
        options = student_eval_options(student)
    elif eval_preprocessing == "official":  # timm 0.6.5's, as the official OFA-KD runs; on CIFAR-100 its stats
        from ._official_data import official_eval_config

        fraction, interpolation, stats = official_eval_config(student)
        mean, std = stats if dataset == "imagenet" else (mean, std)
        options = {"crop_pct": fraction, "crop_mode": "center", "interpolation": interpolation}
    else:
        fraction = crop_pct if crop_pct is not None else (0.875 if dataset == "imagenet" else 1.0)
        options = {"crop_pct": fraction, "crop_mode": "center", "interpolation": interpolation}
    return {"input_size": (3, int(img_size), int(img_size)), "mean": tuple(mean), "std": tuple(std), **options}


@dataclass(frozen=True)
class RunRecord:
    """What a training checkpoint says about rebuilding its student.

    Attributes:
        model_kwargs: ``student_kwargs`` of the run, passed to ``timm.create_model`` (empty without a config).
        data_config: the run's evaluation data config (:func:`eval_data_config`), or ``None`` without a config.
        epoch: the epochs trained when the checkpoint was written, or ``None``.
        source: what wrote it, as provenance records the data config's origin (``run``: a ``cka-probe train``
            run; ``official run``: the official OFA-KD ``train.py``).
    """

    model_kwargs: dict[str, Any] = field(default_factory=dict)
    data_config: dict[str, Any] | None = None
    epoch: int | None = None
    source: str = "run"


def official_run_record(checkpoint: Mapping[str, Any]) -> RunRecord | None:
    """The :class:`RunRecord` of an official OFA-KD ``train.py`` checkpoint (timm's ``CheckpointSaver`` with the
    run's ``args``): the evaluation transform its run used
    (:func:`~cka_probe.models._official_data.official_run_settings`); ``None`` for any other file."""
    from ._official_data import official_run_settings

    args = checkpoint.get("args")
    student = getattr(args, "model", None)
    settings = official_run_settings(args, student) if isinstance(student, str) else None
    if settings is None:
        return None
    epoch = checkpoint.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    return RunRecord(data_config=eval_data_config(**settings), epoch=epoch, source="official run")


def run_record(checkpoint: Mapping[str, Any], path: str | os.PathLike) -> RunRecord:
    """The :class:`RunRecord` of a ``cka-probe train`` checkpoint read by :func:`~cka_probe.models.read_checkpoint`.

    The data config is the one the run recorded having evaluated with (``eval_transform``), where it did;
    else :func:`eval_data_config` of its recipe (checkpoints written before runs recorded it).

    Raises:
        CheckpointError: its config lacks a setting the evaluation transform needs, or its ``student_kwargs``
            are not a mapping.
    """
    epoch = checkpoint.get("epoch")
    epoch = int(epoch) if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    config = checkpoint.get("config")
    if not isinstance(config, Mapping):
        return RunRecord(epoch=epoch)
    kwargs = config.get("student_kwargs") or {}
    if not isinstance(kwargs, Mapping):
        raise CheckpointError(
            f"checkpoint {path} records student_kwargs as a {type(kwargs).__name__}, not a mapping; check the file"
        )
    missing = [key for key in EVAL_KEYS if key not in config]
    if missing:
        raise CheckpointError(
            f"checkpoint {path} records a run config without {', '.join(missing)}, so its evaluation transform "
            "cannot be rebuilt; check the file (cka-probe train records them all)"
        )
    recorded = checkpoint.get("eval_transform")
    if isinstance(recorded, Mapping) and all(key in recorded for key in DATA_CONFIG_KEYS):
        data_config = {
            key: tuple(recorded[key]) if isinstance(recorded[key], list) else recorded[key] for key in DATA_CONFIG_KEYS
        }
        return RunRecord(model_kwargs=dict(kwargs), data_config=data_config, epoch=epoch)
    settings = {key: config[key] for key in EVAL_KEYS}
    try:
        data_config = eval_data_config(**settings)
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"checkpoint {path} records an evaluation recipe cka-probe cannot rebuild ({exc})"
        ) from None
    return RunRecord(model_kwargs=dict(kwargs), data_config=data_config, epoch=epoch)


def checkpoint_label(path: str | os.PathLike, epoch: int | None = None, ema: bool = False, parts: int = 2) -> str:
    """A short name of a checkpoint file that tells runs apart: its folder and file name, the epoch, EMA.

    Args:
        path: The file.
        epoch: Epochs trained (``None``: not shown).
        ema: The EMA weights were taken.
        parts: How many trailing path components to show (more when two files share the last ones).

    >>> checkpoint_label("/runs/seed0/best.pth", epoch=7)
    'seed0/best.pth (epoch 7)'
    >>> checkpoint_label("/runs/seed0/best.pth", epoch=7, ema=True, parts=3)
    'runs/seed0/best.pth (EMA, epoch 7)'
    """
    tail = "/".join(Path(path).parts[-parts:]).lstrip("/")
    details = (["EMA"] if ema else []) + ([f"epoch {epoch}"] if epoch is not None else [])
    return f"{tail} ({', '.join(details)})" if details else tail
