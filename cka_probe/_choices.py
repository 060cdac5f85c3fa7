"""Every choice list, choice pattern and suffix set of cka-probe, defined once.

The library checks its arguments against these tuples, the configuration schemas take their ``Literal``
types from here, the command line builds its ``click.Choice`` options from them, and messages that list
the choices are built from them (:func:`one_of`), so a new choice is added in one place. Nothing else in the
package spells one of these lists out (``tests/test_choices.py`` walks the package to keep it so). This module
imports only the standard library, so the command line can read it before torch loads.
"""

from __future__ import annotations

import re
from typing import Literal, get_args

__all__ = [
    "CHECKPOINT_SELECT",
    "CHECKPOINT_SUFFIXES",
    "CheckpointSelect",
    "DEVICES",
    "DEVICE_PATTERN",
    "DIST_BN",
    "DistBN",
    "ESTIMATORS",
    "EVAL_PREPROCESSING",
    "EXECUTORS",
    "Estimator",
    "EvalPreprocessing",
    "Executor",
    "FAMILIES",
    "FITNET_METHODS",
    "FORMATS",
    "Family",
    "Format",
    "IMAGENETTE_SIZES",
    "INTERPOLATIONS",
    "INTERVAL_SCORES",
    "ImagenetteSize",
    "Interpolation",
    "KERNELS",
    "Kernel",
    "LABELS",
    "Labels",
    "METHODS",
    "MODEL_KINDS",
    "MODEL_WEIGHTS",
    "Method",
    "ModelKind",
    "ModelWeights",
    "OFA_METHODS",
    "POOLS",
    "PRECISIONS",
    "PROBE_SOURCES",
    "Pool",
    "Precision",
    "SCHEDULES",
    "STAGES",
    "SUMMARY_SCORES",
    "Schedule",
    "Stage",
    "SummaryScore",
    "TOKENS",
    "TRAIN_DATASETS",
    "TRAIN_INTERPOLATIONS",
    "Tokens",
    "TrainDataset",
    "TrainInterpolation",
    "WEIGHTS",
    "Weights",
    "one_of",
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

ModelWeights = Literal[Weights, "checkpoint"]
"""Weights of a library model (``load_model``): a choice of :data:`Weights`, or ``checkpoint`` (a file's)."""

Executor = Literal["local", "ray"]
"""Where a job's models run: one after another in this process, or one Ray task per model."""

Family = Literal["cnn", "vit", "mlp", "hybrid", "unknown"]
"""Architecture families of the model registry and of zoo jobs."""

SummaryScore = Literal["diagonal_band_cka", "depth_correspondence", "mean_cka"]
"""The scores a zoo summarises each pair of models by."""

ImagenetteSize = Literal["full", "320px", "160px"]
"""Imagenette's published image sizes (probe source ``imagenette:SIZE``)."""

ModelKind = Literal["cnn", "vit"]
"""How OFA-KD taps and branches a model: CNN feature maps, or ViT-like tokens."""

Stage = Literal[1, 2, 3, 4]
"""The four stages of a network that OFA branches and FitNet hints attach to."""

EvalPreprocessing = Literal["recipe", "student", "official"]
"""Evaluation transform of a training run: the recipe's settings, the student's timm defaults, or the official
OFA-KD code's."""

DistBN = Literal["reduce", "broadcast", "none"]
"""How BatchNorm statistics are made the same across processes before evaluation (timm's ``distribute_bn``)."""

Schedule = Literal["cosine", "tanh", "step", "multistep", "poly", "none"]
"""timm's per-epoch schedules (``plateau`` is left out: it steps on a metric, not an epoch)."""

Interpolation = Literal["bilinear", "bicubic", "nearest", "box", "hamming", "lanczos"]
"""timm's resize interpolations (``timm.data.transforms.str_to_interp_mode``)."""

TrainInterpolation = Literal[Interpolation, "random"]
"""Training-time interpolations: any of :data:`Interpolation`, or ``random`` (a new one per image)."""

KERNELS: tuple[str, ...] = get_args(Kernel)
ESTIMATORS: tuple[str, ...] = get_args(Estimator)
PRECISIONS: tuple[str, ...] = get_args(Precision)
TOKENS: tuple[str, ...] = get_args(Tokens)
POOLS: tuple[str, ...] = get_args(Pool)
WEIGHTS: tuple[str, ...] = get_args(Weights)
MODEL_WEIGHTS: tuple[str, ...] = get_args(ModelWeights)
LABELS: tuple[str, ...] = get_args(Labels)
FORMATS: tuple[str, ...] = get_args(Format)
CHECKPOINT_SELECT: tuple[str, ...] = get_args(CheckpointSelect)
METHODS: tuple[str, ...] = get_args(Method)
OFA_METHODS: tuple[str, ...] = ("ofa", "ofa+fitnet")
"""The methods that train OFA branches (``ofa_stages``, ``ofa_gamma``, ``ofa_loss_weight`` apply)."""
FITNET_METHODS: tuple[str, ...] = ("fitnet", "ofa+fitnet")
"""The methods that add FitNet hints (``fitnet_stages``, ``fitnet_loss_weight`` apply)."""
TRAIN_DATASETS: tuple[str, ...] = get_args(TrainDataset)
EXECUTORS: tuple[str, ...] = get_args(Executor)
FAMILIES: tuple[str, ...] = get_args(Family)
SUMMARY_SCORES: tuple[str, ...] = get_args(SummaryScore)
INTERVAL_SCORES: tuple[str, ...] = ("diagonal_band_cka", "depth_correspondence")
"""The summary scores that get a bootstrap interval (``mean_cka`` is an average over every pair: none)."""
IMAGENETTE_SIZES: tuple[str, ...] = get_args(ImagenetteSize)
MODEL_KINDS: tuple[str, ...] = get_args(ModelKind)
STAGES: tuple[int, ...] = get_args(Stage)
EVAL_PREPROCESSING: tuple[str, ...] = get_args(EvalPreprocessing)
DIST_BN: tuple[str, ...] = get_args(DistBN)
SCHEDULES: tuple[str, ...] = get_args(Schedule)
INTERPOLATIONS: tuple[str, ...] = get_args(Interpolation)
TRAIN_INTERPOLATIONS: tuple[str, ...] = get_args(TrainInterpolation)

PROBE_SOURCES: tuple[str, ...] = ("embedded", "fashion-mnist[:DIR]", "imagenette[:SIZE]", "synthetic")
"""The named probe sources (``--data``), as a user writes them; anything else is taken as a directory."""

CHECKPOINT_SUFFIXES: tuple[str, ...] = (".pth", ".pt", ".bin", ".pth.tar", ".safetensors")
"""The file endings a checkpoint may have (``str.endswith`` takes the tuple)."""

DEVICES: tuple[str, ...] = ("auto", "cpu", "mps", "cuda", "cuda:N")
"""The device names every command and config takes: ``auto`` (CUDA when there is a GPU), ``cpu``, ``mps``,
``cuda`` or ``cuda:N`` (N a GPU's index)."""

DEVICE_PATTERN = re.compile("^(" + "|".join(name.replace(":N", r":\d+") for name in DEVICES) + ")$")
"""A match of a device name of :data:`DEVICES` (``cuda:N`` with N any index)."""


def one_of(choices: tuple[str, ...], last: str = "or") -> str:
    """The choices as a message writes them.

    >>> one_of(DEVICES)
    'auto, cpu, mps, cuda or cuda:N'
    >>> one_of(EXECUTORS)
    'local or ray'
    """
    words = [str(choice) for choice in choices]
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} {last} {words[-1]}"
