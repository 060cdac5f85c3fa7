"""One-for-All knowledge distillation (Hao et al., NeurIPS 2023) and its baselines, for validating CKA analyses.

Public API (imported lazily; Swin-Nano/Pico are registered by :mod:`cka_probe.models`)::

    from cka_probe.ofa import (
        ofa_loss, kd_loss, hint_loss,            # losses
        StageTaps, model_kind, pre_logit_width,  # stage features through forward_intermediates
        isotropic_blocks,                        # the official block map of isotropic students
        build_branch, FitNetAdapter,             # Table 9 branches, B.4 FitNet alignment
        DistillationTask, METHODS,               # one forward pass -> dict of named losses
        TrainConfig, load_config,                # Table 8 recipes (configs/ofa/*.yaml)
        Trainer, train, TrainResult,             # the training loop, checkpoints, resume, DDP
        build_optimizer, build_scheduler,        # timm's optimiser and scheduler of a recipe
        evaluate_model, validate_checkpoint,     # top-1 / top-5 of a model or a checkpoint
        load_initial_checkpoint,                 # a student's first weights from any checkpoint
        TeacherCKA, draw_cka, draw_cka_runs,     # CKA to the teacher while the student trains
        launch, local_batch_size,                # torchrun launch, global batch split
        build_datasets, FashionMNIST,            # data
    )
"""

from __future__ import annotations

from .._lazy import lazy_exports

_PUBLIC = {
    "ofa_loss": "losses",
    "kd_loss": "losses",
    "hint_loss": "losses",
    "target_mask": "losses",
    "STAGES": "taps",
    "StageTaps": "taps",
    "model_kind": "taps",
    "pre_logit_width": "taps",
    "isotropic_blocks": "taps",
    "build_branch": "branches",
    "cnn_branch": "branches",
    "token_branch": "branches",
    "FitNetAdapter": "fitnet",
    "METHODS": "task",
    "DistillationTask": "task",
    "TrainableModules": "task",
    "DATASETS": "config",
    "TrainConfig": "config",
    "load_config": "config",
    "Trainer": "trainer",
    "TrainResult": "trainer",
    "train": "trainer",
    "build_optimizer": "trainer",
    "build_scheduler": "trainer",
    "evaluate_model": "trainer",
    "epoch_line": "trainer",
    "load_initial_checkpoint": "trainer",
    "TeacherCKA": "monitor",
    "draw_cka": "monitor",
    "draw_cka_runs": "monitor",
    "validate_checkpoint": "validate",
    "launch": "distributed",
    "local_batch_size": "distributed",
    "FashionMNIST": "data",
    "build_datasets": "data",
    "build_dataset": "data",
    "build_transforms": "data",
}

__all__ = [
    "DATASETS",
    "METHODS",
    "STAGES",
    "DistillationTask",
    "FashionMNIST",
    "FitNetAdapter",
    "StageTaps",
    "TeacherCKA",
    "TrainConfig",
    "TrainResult",
    "TrainableModules",
    "Trainer",
    "build_branch",
    "build_dataset",
    "build_datasets",
    "build_optimizer",
    "build_scheduler",
    "build_transforms",
    "cnn_branch",
    "draw_cka",
    "draw_cka_runs",
    "epoch_line",
    "evaluate_model",
    "hint_loss",
    "isotropic_blocks",
    "kd_loss",
    "launch",
    "load_config",
    "load_initial_checkpoint",
    "local_batch_size",
    "model_kind",
    "ofa_loss",
    "pre_logit_width",
    "target_mask",
    "token_branch",
    "train",
    "validate_checkpoint",
]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
