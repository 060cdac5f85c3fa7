"""Every choice list of cka-probe, defined once.

The library checks its arguments against these tuples, the configuration schema builds its ``Literal``
types from them, and the command line builds its ``click.Choice`` options from them, so a new choice
is added in one place. This module imports nothing, so the command line can read it before torch loads.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

__all__ = [
    "FITNET_METHODS",
    "FORMATS",
    "Format",
    "DEVICE_PATTERN",
    "CHECKPOINT_SELECT",
    "CheckpointSelect",
    "ESTIMATORS",
    "PRECISIONS",
    "Precision",
    "KERNELS",
    "LABELS",
    "METHODS",
    "OFA_METHODS",
    "POOLS",
    "TOKENS",
    "TRAIN_DATASETS",
    "WEIGHTS",
    "Estimator",
    "Kernel",
    "Labels",
    "Method",
    "Pool",
    "Tokens",
    "TrainDataset",
    "Weights",
]

Kernel = Literal["linear", "rbf"]
"""CKA kernel: linear, or RBF with a median-distance bandwidth."""

Estimator = Literal["full", "minibatch"]
"""``full``: CKA over all n images at once; ``minibatch``: Nguyen et al. (2021) over batches."""

Precision = Literal["float64", "float32"]
"""Arithmetic of the all-pairs CKA product: float64 (the default), or float32 for speed (error measured
in the README's benchmark)."""

Tokens = Literal["patch", "all", "cls"]
"""Token layers of models with prefix tokens: patch tokens only, every token, or the class token."""

Pool = Literal["mean", "max", "flatten"]
"""``mean``/``max`` over spatial positions (channels kept), or ``flatten``: the whole activation."""

Weights = Literal["pretrained", "random"]
"""timm hub weights, or seeded random initialisation (a checkpoint overrides either)."""

CheckpointSelect = Literal["auto", "student", "ema"]
"""Which weights of a checkpoint: ``auto`` (a training run's student, else the file's state dict), the
student, or its EMA."""

Format = Literal["png", "pdf", "svg"]
"""Figure file formats."""

Labels = Literal["auto", "names", "index"]
"""Heatmap tick labels: layer names, 1-based layer numbers, or names when they fit."""

Method = Literal["scratch", "kd", "fitnet", "ofa", "ofa+fitnet"]
"""Training method (``cka-probe train``): no teacher, Hinton KD, FitNet hints, One-for-All KD, or One-for-All KD
with FitNet hints added (each term with its own weight)."""

TrainDataset = Literal["imagenet", "cifar100", "fashion_mnist"]
"""Data set layouts of ``cka-probe train`` and ``cka-probe validate``."""

KERNELS: tuple[str, ...] = get_args(Kernel)
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
PRECISIONS: tuple[str, ...] = get_args(Precision)
TOKENS: tuple[str, ...] = get_args(Tokens)
POOLS: tuple[str, ...] = get_args(Pool)
WEIGHTS: tuple[str, ...] = get_args(Weights)
LABELS: tuple[str, ...] = get_args(Labels)
FORMATS: tuple[str, ...] = get_args(Format)
CHECKPOINT_SELECT: tuple[str, ...] = get_args(CheckpointSelect)
METHODS: tuple[str, ...] = get_args(Method)
OFA_METHODS: tuple[str, ...] = ("ofa", "ofa+fitnet")
"""The methods that train OFA branches (``ofa_stages``, ``ofa_gamma``, ``ofa_loss_weight`` apply)."""
FITNET_METHODS: tuple[str, ...] = ("fitnet", "ofa+fitnet")
"""The methods that add FitNet hints (``fitnet_stages``, ``fitnet_loss_weight`` apply)."""
TRAIN_DATASETS: tuple[str, ...] = get_args(TrainDataset)

DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
"""The device names every command and config takes: ``auto`` (CUDA when there is a GPU), ``cpu``, ``mps``,
``cuda`` or ``cuda:N``."""
