"""Training recipes: one flat YAML mapping per run, read with ``yaml.safe_load`` into :class:`TrainConfig`.

The recipes of Table 8 (Hao et al. 2023, sec. B.3) live in ``configs/ofa/``; any key can be overridden with
``--set key=value`` strings parsed by :func:`cka_probe._config.parse_override` (the value is read as YAML, so
``ofa_stages=[1,2]`` works). The recipe is checked whole by one typed schema (a pydantic model on
:class:`cka_probe._config.Section`: unknown keys refused, no type coercion, choices as ``Literal``) before any
work starts; the first problem is one :class:`~cka_probe.errors.ConfigError` line naming the key, the value
and the fix.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import AllowInfNan, BeforeValidator, Field, field_validator, model_validator

from .._choices import (
    DIST_BN,
    EVAL_PREPROCESSING,
    OFA_METHODS,
    TRAIN_DATASETS,
    CheckpointSelect,
    DistBN,
    EvalPreprocessing,
    Interpolation,
    Method,
    Schedule,
    Stage,
    TrainDataset,
    TrainInterpolation,
)
from .._config import DeviceName, Section, parse_overrides, read_yaml, validate
from ..errors import ConfigError

__all__ = [
    "DATASETS",
    "DIST_BN",
    "EVAL_PREPROCESSING",
    "TrainConfig",
    "load_config",
]

DATASETS = TRAIN_DATASETS
NUMBER = re.compile(r"^[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)$")


def _exponent_number(value: Any) -> Any:
    """``"1e-3"`` as ``0.001``: YAML 1.1 (``yaml.safe_load``) reads a number in exponent form without a dot as a
    string; any other value is left to the strict check."""
    if isinstance(value, str) and NUMBER.match(value.strip()):
        return float(value)
    return value


Number = Annotated[float, BeforeValidator(_exponent_number), AllowInfNan(False)]
"""A finite float; an int is taken as that float, and ``1e-3`` written without a dot is read as a number."""


class TrainConfig(Section):
    """Every setting of a training run. The recipes in ``configs/ofa/`` set Table 8's values; the defaults
    here train plainly (no mixup, smoothing, EMA or erasing) and use the OFA reference code's
    distillation defaults.

    Model and method
        method: ``scratch``, ``kd``, ``fitnet``, ``ofa`` or ``ofa+fitnet`` (OFA with FitNet hints added).
        student / teacher: timm model names; ``*_kwargs`` are passed to ``timm.create_model``.
        teacher_checkpoint: state dict (``.pth`` / ``.safetensors``), a cka-probe training checkpoint or an
            official OFA-KD / timm ``train.py`` checkpoint.
        teacher_checkpoint_key: which weights of ``teacher_checkpoint``: ``auto`` (a run's student, else the
            file's state dict), ``student`` or ``ema`` (the EMA teacher, as the official ``--use-ema-teacher``).
        teacher_pretrained: load the teacher's timm pretrained weights instead (needs them cached).
        student_pretrained: start the student from its timm pretrained weights (hub cache; with another
            ``num_classes`` timm re-initialises the classifier).
        initial_checkpoint: start the student from a checkpoint instead (any file ``teacher_checkpoint``
            takes; its student weights). Every tensor must fit; a classifier of another size (ImageNet's
            1,000 classes for a CIFAR-100 run) is left at its fresh initialisation, as timm does for
            pretrained weights. Both are used only when a run starts; ``--resume`` restores the checkpoint.
        num_classes: ``None`` takes the data set's.
        img_size: training and evaluation resolution.

    Data
        dataset: ``imagenet`` (ImageFolder with ``train/`` and ``val/``), ``cifar100`` (torchvision
        layout, never downloaded) or ``fashion_mnist`` (IDX files).
        data_dir: ``None`` means the data set's default location (Fashion-MNIST only).
        train_samples / val_samples: a fixed subset of that many images (``None``: all).
        crop_pct: evaluation centre-crop fraction (``None``: 0.875 for ImageNet, 1.0 otherwise).
        interpolation: evaluation (and, unless ``train_interpolation`` is set, training) resize interpolation.
        train_interpolation: training interpolation (``random``: bilinear or bicubic per image, as the
            official OFA-KD runs); ``None``: ``interpolation``.
        eval_preprocessing: ``recipe`` (crop_pct and interpolation above), ``student`` (crop fraction,
            crop mode and interpolation of the student's pretrained config in the installed timm) or
            ``official`` (as the official OFA-KD runs evaluated, on CIFAR-100 too: the student's config
            in timm 0.6.5, and on ImageNet its mean / std; the official code's students only).
        erase_after_mixup: apply random erasing to the batch after mixup / cutmix (as timm's prefetching
            loader in the official runs does) instead of to each image before it.
        workers: data-loading processes per device; ``None``: the CPU cores this process may use, shared
            among the processes of a distributed run.

    Optimisation (Table 8): epochs, batch_size (the global batch: over all processes and accumulation
    steps), lr, min_lr, opt (timm name: ``sgd`` is SGD with Nesterov momentum, ``momentum`` plain
    momentum, ``adamw``), weight_decay, sched (``step``: times decay_rate every decay_epochs, dropping at
    epochs 30, 60, 90 for 30; ``multistep``: timm's, which drops one epoch before each of
    decay_milestones; ``cosine``), warmup_epochs from warmup_lr, sched_on_updates (step the schedule after
    every optimiser update, timm ``train.py``'s ``--sched-on-updates``, so that warmup and decay follow the
    steps; ``false``: once per epoch, as the official OFA-KD runs), ema_decay (``None``: no EMA).
    weight_decay_exempt_embeddings: ``false`` (default) decays every weight of two or more dimensions,
    position embeddings, class token and Swin's relative-position bias tables included, as the official
    OFA-KD code does (its optimiser sees the distiller, which has no ``no_weight_decay()``); ``true``
    exempts the student's ``no_weight_decay()`` names, timm's rule for a bare model. Biases and norm
    weights are never decayed (timm's ``filter_bias_and_bn``).
    drop_path: the student's stochastic-depth rate (``None``: the timm model's default, 0.1 for Swin).
    grad_accum_steps: optimiser steps take this many micro-batches per process, so that a smaller
    number of devices reaches ``batch_size`` with the same learning rate and per-step semantics.

    Distributed (``torchrun``): dist_bn (``reduce``: average BatchNorm statistics over processes before
    each evaluation, as the official runs; ``broadcast``: take rank 0's; ``none``), sync_bn
    (SyncBatchNorm instead of per-device statistics).

    Augmentation (Table 8): rand_augment (timm ``auto_augment`` string, e.g. ``rand-m9-mstd0.5`` for
    Table 8's "9/0.5"), mixup, cutmix (alphas; 0 disables), reprob (random-erasing probability).

    Distillation: see :class:`~cka_probe.ofa.task.DistillationTask`.

    CKA to the teacher during training (:mod:`cka_probe.ofa.monitor`): cka_every (every that many
    epochs, and at the last; 0 turns it off), cka_probe_size (validation images, class-balanced, drawn once
    with probe seed 0 whatever ``seed`` is, so every run of a study is measured on the same images).

    Run: seed, output_dir, device (``auto``: CUDA when available), amp (used on CUDA only),
    workers, limit_train_batches / limit_val_batches (``None``: all batches; for smoke runs).
    """

    # model and method
    method: Method = "scratch"
    student: str = "resnet18"
    student_kwargs: dict[str, Any] = Field(default_factory=dict)
    teacher: str | None = None
    teacher_kwargs: dict[str, Any] = Field(default_factory=dict)
    teacher_checkpoint: str | None = None
    teacher_checkpoint_key: CheckpointSelect = "auto"
    teacher_pretrained: bool = False
    student_pretrained: bool = False
    initial_checkpoint: str | None = None
    num_classes: int | None = Field(None, ge=1)
    img_size: int = Field(224, ge=1)
    # data
    dataset: TrainDataset = "imagenet"
    data_dir: str | None = None
    train_samples: int | None = Field(None, ge=1)
    val_samples: int | None = Field(None, ge=1)
    workers: int | None = Field(None, ge=0)
    crop_pct: Number | None = Field(None, gt=0, le=1)
    crop_scale: list[Number] = Field(default_factory=lambda: [0.08, 1.0], min_length=2, max_length=2)
    hflip: Number = Field(0.5, ge=0, le=1)
    color_jitter: Number = Field(0.4, ge=0)
    interpolation: Interpolation = "bilinear"
    train_interpolation: TrainInterpolation | None = None
    eval_preprocessing: EvalPreprocessing = "recipe"
    erase_after_mixup: bool = False
    # optimisation (Table 8)
    epochs: int = Field(300, ge=1)
    batch_size: int = Field(1024, ge=1)
    lr: Number = Field(5e-4, gt=0)
    min_lr: Number = Field(1e-5, ge=0)
    opt: str = "adamw"
    momentum: Number = Field(0.9, ge=0, le=1)
    weight_decay: Number = Field(0.05, ge=0)
    sched: Schedule = "cosine"
    decay_milestones: list[Annotated[int, Field(ge=0)]] = Field(default_factory=lambda: [30, 60, 90])
    decay_epochs: Number = Field(30.0, gt=0)
    decay_rate: Number = Field(0.1, gt=0)
    warmup_epochs: int = Field(20, ge=0)
    warmup_lr: Number = Field(1e-5, ge=0)
    sched_on_updates: bool = False
    ema_decay: Number | None = Field(None, gt=0, lt=1)
    clip_grad: Number | None = Field(None, gt=0)
    weight_decay_exempt_embeddings: bool = False
    drop_path: Number | None = Field(None, ge=0, lt=1)
    grad_accum_steps: int = Field(1, ge=1)
    # augmentation (Table 8)
    rand_augment: str | None = None
    mixup: Number = Field(0.0, ge=0)
    cutmix: Number = Field(0.0, ge=0)
    reprob: Number = Field(0.0, ge=0, le=1)
    smoothing: Number = Field(0.0, ge=0, le=1)
    # distillation
    gt_loss_weight: Number = Field(1.0, ge=0)
    kd_loss_weight: Number = Field(1.0, ge=0)
    kd_temperature: Number = Field(1.0, gt=0)
    ofa_stages: list[Stage] = Field(default_factory=lambda: [1, 2, 3, 4])
    ofa_gamma: Annotated[Number, Field(gt=0)] | list[Annotated[Number, Field(gt=0)]] = 1.0
    ofa_loss_weight: Annotated[Number, Field(ge=0)] | list[Annotated[Number, Field(ge=0)]] = 1.0
    ofa_temperature: Number = Field(1.0, gt=0)
    fitnet_stages: list[Stage] = Field(default_factory=lambda: [1, 2, 3, 4])
    fitnet_loss_weight: Number = Field(1.0, ge=0)
    # CKA to the teacher during training
    cka_every: int = Field(1, ge=0)
    cka_probe_size: int = Field(128, ge=4)
    # run
    seed: int = Field(0, ge=0)
    output_dir: str = "runs/ofa"
    device: DeviceName = "auto"
    amp: bool = True
    dist_bn: DistBN = "reduce"
    sync_bn: bool = False
    limit_train_batches: int | None = Field(None, ge=1)
    limit_val_batches: int | None = Field(None, ge=1)

    @field_validator("opt")
    @classmethod
    def _optimizer(cls, value: str) -> str:
        from timm.optim import list_optimizers

        if value.lower() not in list_optimizers():
            raise ValueError("use a timm optimizer name, e.g. sgd, momentum or adamw (timm.optim.list_optimizers())")
        return value

    @field_validator("ofa_stages", "fitnet_stages")
    @classmethod
    def _stages_once(cls, value: list[int]) -> list[int]:
        if len(set(value)) != len(value):
            raise ValueError("list each stage (1 to 4) once")
        return value

    @field_validator("crop_scale")
    @classmethod
    def _crop_scale(cls, value: list[float]) -> list[float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError("must be [min, max] area fractions with 0 < min <= max")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> TrainConfig:
        """The checks that involve more than one key."""
        if self.method != "scratch" and not self.teacher:
            raise ValueError(
                f"method {self.method!r} needs a teacher; set teacher in the recipe or --set teacher=MODEL"
            )
        if self.student_pretrained and self.initial_checkpoint:
            raise ValueError(
                "student_pretrained and initial_checkpoint both set the student's first weights; keep one with "
                "--set student_pretrained=false or --set initial_checkpoint=null"
            )
        if self.eval_preprocessing == "official":
            from ..models._official_data import official_eval_config

            official_eval_config(self.student)  # a student the official code never had: one line naming the fix
        if self.warmup_epochs and self.warmup_lr == 0 and not self.sched_on_updates and self.sched != "none":
            raise ValueError(
                "warmup_lr 0 with a per-epoch schedule trains the first epoch at learning rate 0; set "
                "--set warmup_lr=VALUE above 0, --set sched_on_updates=true or --set warmup_epochs=0"
            )
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ValueError(
                f"mixup and cutmix need an even batch_size, got {self.batch_size}; fix it with --set batch_size=VALUE"
            )
        if self.method in OFA_METHODS:
            stages = len(self.ofa_stages)
            for key, length, shape in (
                ("ofa_gamma", stages + 1, "one per stage of ofa_stages plus one for the logits"),
                ("ofa_loss_weight", stages, "one per stage of ofa_stages"),
            ):
                value = getattr(self, key)
                if isinstance(value, list) and len(value) not in (1, length):
                    raise ValueError(
                        f"{key} has {len(value)} values; give one, or {length} ({shape}), with --set {key}=[...]"
                    )
        return self

    @classmethod
    def keys(cls) -> list[str]:
        """The valid keys, in declaration order."""
        return list(cls.model_fields)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "training recipe") -> TrainConfig:
        """Check a mapping of keys to values against the schema; the first problem is one :class:`ConfigError`
        line naming ``source``, the key, the value and the fix."""
        if not isinstance(values, Mapping):
            raise ConfigError(f"{source} must hold a mapping of keys to values, not {type(values).__name__}")
        return validate(cls, dict(values), source)

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON-able) copy of every setting."""
        return self.model_dump()

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed (checked like the rest)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes}, source="replace()")

    def validate(self) -> None:  # type: ignore[override]
        """Check the current values again (after attributes were assigned); raise :class:`ConfigError` on the
        first bad one."""
        TrainConfig.from_dict(self.to_dict())


def load_config(path: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Read a YAML recipe (``yaml.safe_load``), apply overrides and check the result.

    Args:
        path: YAML file holding one mapping of keys to values; ``None`` starts from the defaults.
        overrides: ``"key=value"`` strings (``--set``; the value parsed as YAML by
            :func:`cka_probe._config.parse_override`) or a mapping of keys to values.

    Example:
        >>> load_config(None, ["method=scratch", "lr=1e-3"]).lr
        0.001
    """
    values: dict[str, Any] = {}
    source = "training recipe"
    if path is not None:
        source = f"recipe {path}"
        loaded = read_yaml(path, "recipe")
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{source} must hold a mapping of keys to values, not {type(loaded).__name__}")
        values.update(loaded)
    values.update(parse_overrides(overrides))
    return TrainConfig.from_dict(values, source=source)
