"""Training recipes: one flat YAML mapping per run, read with ``yaml.safe_load`` into :class:`TrainConfig`.

The recipes of Table 8 (Hao et al. 2023, sec. B.3) live in ``configs/ofa/``; any key can be
overridden with ``key=value`` strings (the value is parsed as YAML, so ``ofa_stages=[1,2]`` works).
Unknown keys and values of the wrong type are refused with one line that names the key and the
valid ones.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Union

import yaml

from ..errors import ConfigError
from .task import METHODS

__all__ = [
    "DATASETS",
    "DIST_BN",
    "EVAL_PREPROCESSING",
    "TrainConfig",
    "load_config",
    "parse_override",
]

DATASETS = ("imagenet", "cifar100", "fashion_mnist")
EVAL_PREPROCESSING = ("recipe", "student")
DIST_BN = ("reduce", "broadcast", "none")


@dataclasses.dataclass
class TrainConfig:
    """Every setting of a training run. The recipes in ``configs/ofa/`` set Table 8's values; the defaults
    here train plainly (no mixup, smoothing, EMA or erasing) and use the OFA reference code's
    distillation defaults.

    Model and method
        method: ``scratch``, ``kd``, ``fitnet`` or ``ofa``.
        student / teacher: timm model names; ``*_kwargs`` are passed to ``timm.create_model``.
        teacher_checkpoint: state dict (``.pth`` / ``.safetensors``) or a cka-probe training checkpoint.
        teacher_pretrained: load the teacher's timm pretrained weights instead (needs them cached).
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
        eval_preprocessing: ``recipe`` (crop_pct and interpolation above) or ``student`` (crop fraction,
            crop mode and interpolation of the student's own timm pretrained config, as the official
            OFA-KD runs evaluate, on CIFAR-100 too).
        erase_after_mixup: apply random erasing to the batch after mixup / cutmix (as timm's prefetching
            loader in the official runs does) instead of to each image before it.
        workers: data-loading processes per device; ``None``: the CPU cores this process may use, shared
            among the processes of a distributed run.

    Optimisation (Table 8): epochs, batch_size (the global batch: over all processes and accumulation
    steps), lr, min_lr, opt (timm name: ``sgd`` is SGD with Nesterov momentum, ``momentum`` plain
    momentum, ``adamw``), weight_decay, sched (``step``: times decay_rate every decay_epochs, dropping at
    epochs 30, 60, 90 for 30; ``multistep``: timm's, which drops one epoch before each of
    decay_milestones; ``cosine``), warmup_epochs from warmup_lr, ema_decay (``None``: no EMA).
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

    Run: seed, output_dir, device (``auto``: CUDA when available), amp (used on CUDA only),
    workers, limit_train_batches / limit_val_batches (``None``: all batches; for smoke runs).
    """

    # model and method
    method: str = "scratch"
    student: str = "resnet18"
    student_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher: str | None = None
    teacher_kwargs: dict = dataclasses.field(default_factory=dict)
    teacher_checkpoint: str | None = None
    teacher_pretrained: bool = False
    num_classes: int | None = None
    img_size: int = 224
    # data
    dataset: str = "imagenet"
    data_dir: str | None = None
    train_samples: int | None = None
    val_samples: int | None = None
    workers: int | None = None
    crop_pct: float | None = None
    crop_scale: list[float] = dataclasses.field(default_factory=lambda: [0.08, 1.0])
    hflip: float = 0.5
    color_jitter: float = 0.4
    interpolation: str = "bilinear"
    train_interpolation: str | None = None
    eval_preprocessing: str = "recipe"
    erase_after_mixup: bool = False
    # optimisation (Table 8)
    epochs: int = 300
    batch_size: int = 1024
    lr: float = 5e-4
    min_lr: float = 1e-5
    opt: str = "adamw"
    momentum: float = 0.9
    weight_decay: float = 0.05
    sched: str = "cosine"
    decay_milestones: list[int] = dataclasses.field(default_factory=lambda: [30, 60, 90])
    decay_epochs: float = 30.0
    decay_rate: float = 0.1
    warmup_epochs: int = 20
    warmup_lr: float = 1e-5
    ema_decay: float | None = None
    clip_grad: float | None = None
    weight_decay_exempt_embeddings: bool = False
    drop_path: float | None = None
    grad_accum_steps: int = 1
    # augmentation (Table 8)
    rand_augment: str | None = None
    mixup: float = 0.0
    cutmix: float = 0.0
    reprob: float = 0.0
    smoothing: float = 0.0
    # distillation
    gt_loss_weight: float = 1.0
    kd_loss_weight: float = 1.0
    kd_temperature: float = 1.0
    ofa_stages: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    ofa_gamma: float | list[float] = 1.0
    ofa_loss_weight: float | list[float] = 1.0
    ofa_temperature: float = 1.0
    fitnet_stages: list[int] = dataclasses.field(default_factory=lambda: [1, 2, 3, 4])
    fitnet_loss_weight: float = 1.0
    # run
    seed: int = 0
    output_dir: str = "runs/ofa"
    device: str = "auto"
    amp: bool = True
    dist_bn: str = "reduce"
    sync_bn: bool = False
    limit_train_batches: int | None = None
    limit_val_batches: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    @classmethod
    def keys(cls) -> list[str]:
        """The valid keys, in declaration order."""
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, values: Mapping[str, Any], source: str = "config") -> TrainConfig:
        """Build from a mapping, refusing unknown keys and values of the wrong type."""
        hints = typing.get_type_hints(cls)
        coerced = {}
        for key, value in values.items():
            if key not in hints:
                raise ConfigError(_unknown_key_message(key, source))
            coerced[key] = _coerce(key, value, hints[key])
        return cls(**coerced)

    def to_dict(self) -> dict[str, Any]:
        """Plain (YAML/JSON-able) copy of every setting."""
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with some settings changed (validated like the rest)."""
        return TrainConfig.from_dict({**self.to_dict(), **changes}, source="replace()")

    def validate(self) -> None:
        """Check the values' ranges and choices; raise :class:`ConfigError` on the first bad one."""
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; valid methods: {', '.join(METHODS)}")
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid datasets: {', '.join(DATASETS)}")
        if self.method != "scratch" and not self.teacher:
            raise ConfigError(f"method {self.method!r} needs a teacher: set teacher=<timm model name>")
        if self.eval_preprocessing not in EVAL_PREPROCESSING:
            raise ConfigError(
                f"unknown eval_preprocessing {self.eval_preprocessing!r}; use one of {', '.join(EVAL_PREPROCESSING)}"
            )
        if self.dist_bn not in DIST_BN:
            raise ConfigError(f"unknown dist_bn {self.dist_bn!r}; use one of {', '.join(DIST_BN)}")
        if self.drop_path is not None and not 0.0 <= self.drop_path < 1.0:
            raise ConfigError(f"drop_path must lie in [0, 1) or be null, got {self.drop_path}")
        for key in (
            "epochs",
            "batch_size",
            "img_size",
            "grad_accum_steps",
            "decay_epochs",
        ):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        for key in ("lr", "kd_temperature", "ofa_temperature"):
            if getattr(self, key) <= 0:
                raise ConfigError(f"{key} must be positive, got {getattr(self, key)}")
        for key in (
            "min_lr",
            "weight_decay",
            "warmup_epochs",
            "mixup",
            "cutmix",
            "workers",
        ):
            if getattr(self, key) is not None and getattr(self, key) < 0:
                raise ConfigError(f"{key} must not be negative, got {getattr(self, key)}")
        for key in ("reprob", "smoothing", "hflip"):
            if not 0.0 <= getattr(self, key) <= 1.0:
                raise ConfigError(f"{key} must lie in [0, 1], got {getattr(self, key)}")
        if self.ema_decay is not None and not 0.0 < self.ema_decay < 1.0:
            raise ConfigError(f"ema_decay must lie in (0, 1) or be null, got {self.ema_decay}")
        if (self.mixup > 0 or self.cutmix > 0) and self.batch_size % 2:
            raise ConfigError(f"mixup/cutmix need an even batch_size, got {self.batch_size}")
        if len(self.crop_scale) != 2:
            raise ConfigError(f"crop_scale must be [min, max], got {self.crop_scale}")
        for key in (
            "train_samples",
            "val_samples",
            "limit_train_batches",
            "limit_val_batches",
            "num_classes",
        ):
            value = getattr(self, key)
            if value is not None and value <= 0:
                raise ConfigError(f"{key} must be positive or null, got {value}")


def load_config(path: str | Path | None = None, overrides: Iterable[str] | Mapping[str, Any] = ()) -> TrainConfig:
    """Read a YAML recipe (``yaml.safe_load``) and apply overrides.

    Args:
        path: YAML file holding one mapping of keys to values; ``None`` starts from the defaults.
        overrides: ``"key=value"`` strings (value parsed as YAML) or a mapping of keys to values.

    Example:
        >>> load_config(None, ["method=scratch", "lr=1e-3"]).lr
        0.001
    """
    values: dict[str, Any] = {}
    source = "defaults"
    if path is not None:
        path = Path(path)
        source = str(path)
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"config file {path} is not valid YAML: {' '.join(str(exc).split())}") from None
        if loaded is None:
            loaded = {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"config file {path} must hold a mapping of keys to values, not {type(loaded).__name__}")
        values.update(loaded)
    if isinstance(overrides, Mapping):
        override_values = dict(overrides)
    else:
        override_values = dict(parse_override(item) for item in overrides)
    for key in override_values:
        if key not in TrainConfig.keys():
            raise ConfigError(_unknown_key_message(key, "overrides"))
    values.update(override_values)
    return TrainConfig.from_dict(values, source=source)


def parse_override(item: str) -> tuple[str, Any]:
    """Split ``"key=value"`` and parse the value as YAML.

    Example:
        >>> parse_override("ofa_stages=[1, 2]")
        ('ofa_stages', [1, 2])
    """
    key, sep, raw = item.partition("=")
    key = key.strip()
    if not sep or not key:
        raise ConfigError(f"override {item!r} is not key=value")
    try:
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return key, value


def _unknown_key_message(key: str, source: str) -> str:
    valid = TrainConfig.keys()
    same_words = [k for k in valid if sorted(k.split("_")) == sorted(str(key).split("_"))]
    close = same_words or difflib.get_close_matches(str(key), valid, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown key {key!r} in {source}{hint}; valid keys: {', '.join(valid)}"


def _coerce(key: str, value: Any, hint: Any) -> Any:
    """Check ``value`` against the field's type hint, converting int->float and numeric strings."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for option in (a for a in args if a is not type(None)):
            try:
                return _coerce(key, value, option)
            except ConfigError as exc:
                errors.append(exc)
        raise (
            errors[-1] if len(errors) == 1 else ConfigError(f"{key} must be one of {_type_names(args)}, got {value!r}")
        )
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
        raise ConfigError(f"{key} must be a number, got {value!r}")
    if hint is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} must be a string, got {value!r}")
    if origin is list:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{key} must be a list, got {value!r}")
        return [_coerce(key, item, args[0]) for item in value]
    if hint is dict or origin is dict:
        if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
            raise ConfigError(f"{key} must be a mapping with string keys, got {value!r}")
        return dict(value)
    return value


def _type_names(args: tuple) -> str:
    names = []
    for arg in args:
        if arg is type(None):
            names.append("null")
        elif typing.get_origin(arg) is list:
            names.append(f"a list of {typing.get_args(arg)[0].__name__}")
        else:
            names.append(arg.__name__)
    return ", ".join(names)
