"""The training loop: timm's optimiser, scheduler, EMA, mixup and transforms around a DistillationTask.

Per epoch: train (teacher frozen, in eval mode, under ``no_grad``; student, branches and adapters
updated together), evaluate top-1 / top-5 of the student (and of its EMA), write ``last.pth`` and,
when a validation top-1 is the best so far, ``best.pth`` (``best_ema.pth`` for the EMA's), append one
JSON line to ``metrics.jsonl`` and one row to ``summary.csv``, and print one line.

Distributed runs (``torchrun``, see :mod:`cka_probe.ofa.distributed`) wrap the task in
DistributedDataParallel: each process reads its share of every global batch through a
``DistributedSampler``, BatchNorm statistics stay per device and are averaged (``dist_bn: reduce``)
before evaluation unless ``sync_bn`` is on, every process keeps the EMA, and only rank 0 writes.

Resuming from a checkpoint continues exactly: model, branch, optimiser, EMA and grad-scaler states
are restored, and every epoch starts by seeding the Python, NumPy and torch generators from
``(seed, epoch, rank)`` and draws its data order from ``(seed, epoch)``, so the resumed run takes the
same next step as an uninterrupted one, on any number of processes. The learning-rate schedule is
built from this run's ``epochs`` and stepped to the resumed epoch (timm's ``train.py``), so a resume
with a larger ``epochs`` follows the longer schedule: every added epoch gets the learning rate an
uninterrupted run of that length gives it, never the end of the old schedule.

The student starts from seeded random weights, its timm pretrained weights (``student_pretrained``) or
a checkpoint (``initial_checkpoint``); the teacher from a checkpoint (its student or EMA weights,
``teacher_checkpoint_key``) or its pretrained weights. With a teacher, rank 0 measures the linear CKA of
the student's (and its EMA's) stages to the teacher's every ``cka_every`` epochs on a fixed probe set
(:mod:`cka_probe.ofa.monitor`), logs it in ``metrics.jsonl`` and draws ``cka_to_teacher.png`` when the
run ends.
"""

from __future__ import annotations

import contextlib
import csv
import json
import random
import shutil
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset

from .._choices import SCHEDULES, one_of
from .._device import resolve_device
from ..errors import CheckpointError, CheckpointMismatchError, ConfigError, OutputExistsError, StageError
from ..models import (
    CheckpointKeysWarning,
    SelectedState,
    checkpoint_num_classes,
    read_checkpoint,
    select_state_dict,
)
from ..models import load_checkpoint as load_weights
from .checkpoint import CHECKPOINT_FORMAT, check_state_dict, save_checkpoint
from .config import TrainConfig
from .distributed import default_workers, init_distributed, local_batch_size
from .task import DistillationTask

__all__ = [
    "BEST_EMA_NAME",
    "BEST_NAME",
    "CHECKPOINT_NAME",
    "CKA_FIGURE_NAME",
    "SUMMARY_NAME",
    "TrainResult",
    "Trainer",
    "build_optimizer",
    "build_scheduler",
    "epoch_line",
    "evaluate_model",
    "load_initial_checkpoint",
    "train",
]

CHECKPOINT_NAME = "last.pth"
BEST_NAME = "best.pth"
BEST_EMA_NAME = "best_ema.pth"
METRICS_NAME = "metrics.jsonl"
SUMMARY_NAME = "summary.csv"
CKA_FIGURE_NAME = "cka_to_teacher.png"
CKA_PROVENANCE_NAME = "cka_provenance.json"

# The fixes a one-line error names when hub weights cannot be had, in the train command's terms.
_STUDENT_WEIGHTS_FIX = (
    "start from random weights (--set student_pretrained=false) or a local file (--set initial_checkpoint=PATH), "
    "run once with network access to fill the cache, or set HF_HOME to a cache that holds them"
)
_TEACHER_WEIGHTS_FIX = (
    "give the teacher's weights as a file (--set teacher_checkpoint=PATH --set teacher_pretrained=false), "
    "run once with network access to fill the cache, or set HF_HOME to a cache that holds them"
)

# Settings that define what is trained; a checkpoint must agree on them to be resumed.
_IDENTITY_KEYS = (
    "method", "student", "student_kwargs", "teacher", "teacher_kwargs", "num_classes", "img_size",
    "ofa_stages", "fitnet_stages", "ema_decay", "batch_size",
)  # fmt: skip


@dataclass
class TrainResult:
    """What a run leaves behind.

    Attributes:
        output_dir: folder of the checkpoints, the metrics log and the summary.
        checkpoint: path of the last checkpoint.
        history: one dict per epoch run in this call, as written to ``metrics.jsonl``.
        best: path of the checkpoint of the best validation top-1 (``None`` before any epoch).
        best_ema: the same for the EMA (``None`` without EMA).
    """

    output_dir: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)
    best: Path | None = None
    best_ema: Path | None = None

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (empty when no epoch was run)."""
        return self.history[-1] if self.history else {}


class Trainer:
    """One training run of ``config``, on one process or as one rank of a distributed run.

    Args:
        config: the run's settings.
        datasets: ``(train, val)`` data sets yielding ``(image tensor, class index)``; by default
            :func:`~cka_probe.ofa.data.build_datasets`.
        progress: show tqdm progress bars (rank 0 only).
        overwrite: allow writing into an output folder that already holds a run.
        echo: called with the one-line summary of each epoch (rank 0 only), e.g. ``print``.
    """

    def __init__(
        self,
        config: TrainConfig,
        datasets: tuple[Dataset, Dataset] | None = None,
        progress: bool = False,
        overwrite: bool = False,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.config = config
        self.overwrite = overwrite
        self.echo = echo
        self.output_dir = Path(config.output_dir)
        self.checkpoint_path = self.output_dir / CHECKPOINT_NAME
        self.metrics_path = self.output_dir / METRICS_NAME
        self.summary_path = self.output_dir / SUMMARY_NAME
        self.dist, self.device = init_distributed(resolve_device(config.device))
        self.progress = progress and self.dist.is_main
        if config.sync_bn and self.dist.distributed and self.device.type != "cuda":
            raise ConfigError(
                "sync_bn needs CUDA devices (SyncBatchNorm); on CPUs use --set sync_bn=false (dist_bn: reduce averages BatchNorm "
                "statistics instead)"
            )
        for key in ("initial_checkpoint", "teacher_checkpoint"):  # before any model is built, in the recipe's terms
            path = getattr(config, key)
            if path and not Path(path).expanduser().is_file():
                raise CheckpointError(f"{key} {path} does not exist; fix it with --set {key}=PATH")
        self.local_batch = local_batch_size(config.batch_size, self.dist.world_size, config.grad_accum_steps)
        if (config.mixup > 0 or config.cutmix > 0) and self.local_batch % 2:
            raise ConfigError(
                f"mixup/cutmix need an even batch per device and step, got {self.local_batch} "
                f"(batch_size {config.batch_size} / {self.dist.world_size} process(es) / {config.grad_accum_steps} "
                "accumulation step(s)); change batch_size or grad_accum_steps"
            )
        self.workers = config.workers if config.workers is not None else default_workers(self.dist.local_world_size)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"
        _seed_everything(config.seed)
        from .data import eval_transform_settings

        self.eval_transform = eval_transform_settings(config)  # the recipe's, recorded in checkpoints and metrics

        if datasets is None:
            from .data import build_datasets

            datasets = build_datasets(config)
        self.train_set, self.val_set = datasets
        if len(self.train_set) < config.batch_size:
            raise ConfigError(
                f"batch_size {config.batch_size} exceeds the {len(self.train_set)} training images; lower batch_size"
            )
        self.num_classes = config.num_classes or _dataset_classes(self.train_set, config)

        student_kwargs = dict(config.student_kwargs)
        if config.drop_path is not None:
            student_kwargs["drop_path_rate"] = config.drop_path
        student = _create_model(
            config.student, self.num_classes, student_kwargs, config.student_pretrained, _STUDENT_WEIGHTS_FIX
        )
        self.student_timm_name = student.pretrained_cfg.get("architecture", config.student)
        if config.initial_checkpoint:
            load_initial_checkpoint(student, config.initial_checkpoint, config.student)
        teacher = self._create_teacher() if config.method != "scratch" else None
        self.mixup = self._create_mixup()
        self.task = DistillationTask(
            config.method,
            student,
            teacher,
            criterion=self._create_criterion(),
            input_size=(3, config.img_size, config.img_size),
            gt_loss_weight=config.gt_loss_weight,
            kd_loss_weight=config.kd_loss_weight,
            kd_temperature=config.kd_temperature,
            ofa_stages=config.ofa_stages,
            ofa_gamma=config.ofa_gamma,
            ofa_loss_weight=config.ofa_loss_weight,
            ofa_temperature=config.ofa_temperature,
            fitnet_stages=config.fitnet_stages,
            fitnet_loss_weight=config.fitnet_loss_weight,
        )
        if config.sync_bn and self.dist.distributed:
            from timm.layers import convert_sync_batchnorm

            self.task = convert_sync_batchnorm(self.task)
        self.task = self.task.to(self.device)
        self.model: nn.Module = self.task
        if self.dist.distributed:
            from torch.nn.parallel import DistributedDataParallel

            device_ids = [self.device.index] if self.device.type == "cuda" else None
            self.model = DistributedDataParallel(self.task, device_ids=device_ids)

        from timm.utils import ModelEmaV3

        self.optimizer = build_optimizer(self.task.trainable, config)
        self.scheduler = build_scheduler(self.optimizer, config, self._steps_per_epoch())
        self.ema = ModelEmaV3(self.task.student, decay=config.ema_decay) if config.ema_decay else None
        self.eraser = self._create_eraser()
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.monitor = self._create_monitor() if self.dist.is_main else None
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken
        self.best: dict[str, dict[str, float]] = {}  # "student" / "ema" -> {"top1", "epoch"}

    # ------------------------------------------------------------------ building blocks

    def _create_teacher(self) -> nn.Module:
        config = self.config
        if not config.teacher_checkpoint and not config.teacher_pretrained:
            raise ConfigError(
                f"method {config.method!r} needs a trained teacher: --set teacher_checkpoint=PATH (or --set teacher_pretrained=true)"
            )
        kwargs, selected, path = config.teacher_kwargs, None, config.teacher_checkpoint
        if path:
            try:
                selected = select_state_dict(read_checkpoint(path), path, config.teacher_checkpoint_key)
            except CheckpointError as exc:
                if config.teacher_checkpoint_key != "ema":
                    raise
                raise CheckpointError(
                    f"teacher_checkpoint {path} holds no EMA weights; use --set teacher_checkpoint_key=auto for its "
                    "weights, or the checkpoint of a run trained with ema_decay set"
                ) from exc
            if not kwargs and selected.run is not None:  # a run's teacher is rebuilt as that run trained it
                kwargs = dict(selected.run.model_kwargs)
        teacher = _create_model(
            config.teacher, self.num_classes, kwargs, config.teacher_pretrained, _TEACHER_WEIGHTS_FIX
        )
        if selected is not None:
            try:
                load_weights(teacher, path, model_label=config.teacher, strict=True, selected=selected)
            except CheckpointMismatchError as exc:  # the fix in the recipe's terms, not compare's
                reason = str(exc).rsplit("; ", 1)[0]
                raise CheckpointMismatchError(
                    f"teacher_checkpoint: {reason}; set --set teacher=NAME (and teacher_kwargs) to the model it was "
                    "saved from"
                ) from None
        return teacher

    def _create_monitor(self):
        """CKA of the student (and EMA) to the teacher on the probe set; ``None`` when off or without a teacher.

        Under ``scratch`` a ``teacher`` with weights (a checkpoint or pretrained) is built for the measurement
        alone, so a baseline's CKA to the teacher can be drawn beside the distilled students'.
        """
        config = self.config
        if config.cka_every == 0:
            return None
        teacher = self.task.teacher
        if teacher is None:
            if not config.teacher or not (config.teacher_checkpoint or config.teacher_pretrained):
                return None
            teacher = self._create_teacher().to(self.device).eval().requires_grad_(False)
        from .monitor import TeacherCKA, probe_images

        images, _ = probe_images(self.val_set, config.cka_probe_size)
        models = {"student": self.task.student}
        if self.ema is not None:
            models["ema"] = self.ema.module
        try:
            return TeacherCKA(teacher, models, images.to(self.device), batch_size=self.local_batch)
        except StageError as exc:  # a model without four stages: kd and scratch train it, the probe cannot tap it
            raise StageError(f"CKA to the teacher taps four stages: {exc}; or turn it off with --cka-every 0") from None

    def _create_mixup(self) -> Callable | None:
        from timm.data import Mixup

        if self.config.mixup <= 0 and self.config.cutmix <= 0:
            return None
        return Mixup(
            mixup_alpha=self.config.mixup,
            cutmix_alpha=self.config.cutmix,
            label_smoothing=self.config.smoothing,
            num_classes=self.num_classes,
        )

    def _create_eraser(self) -> Callable | None:
        """timm's RandomErasing on whole batches, for ``erase_after_mixup`` (as timm's prefetching loader)."""
        if not self.config.erase_after_mixup or self.config.reprob <= 0:
            return None
        from timm.data.random_erasing import RandomErasing

        return RandomErasing(self.config.reprob, mode="pixel", max_count=1, device=str(self.device))

    def _create_criterion(self) -> nn.Module:
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        if self.mixup is not None:
            return SoftTargetCrossEntropy()
        if self.config.smoothing > 0:
            return LabelSmoothingCrossEntropy(smoothing=self.config.smoothing)
        return nn.CrossEntropyLoss()

    def _train_loader(self) -> DataLoader:
        """This process's micro-batches of the epoch: a share of each global batch, the same order on any world size."""
        sampler = DistributedSampler(
            self.train_set,
            num_replicas=self.dist.world_size,
            rank=self.dist.rank,
            shuffle=True,
            seed=self.config.seed,
            drop_last=True,
        )
        sampler.set_epoch(self.epoch)
        return DataLoader(
            self.train_set,
            batch_size=self.local_batch,
            sampler=sampler,
            drop_last=True,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    def _steps_per_epoch(self) -> int:
        """Optimiser updates in one epoch: this process's whole micro-batches (its sampler and loader drop the
        remainders) over the accumulation steps, at most ``limit_train_batches``."""
        micro_batches = len(self.train_set) // self.dist.world_size // self.local_batch
        steps = micro_batches // self.config.grad_accum_steps
        limit = self.config.limit_train_batches
        return steps if limit is None else min(steps, limit)

    def _val_loader(self) -> DataLoader:
        """Every ``world_size``-th validation image from this rank on: the shards cover the set exactly once."""
        indices = list(range(self.dist.rank, len(self.val_set), self.dist.world_size))
        shard = self.val_set if self.dist.world_size == 1 else Subset(self.val_set, indices)
        return DataLoader(
            shard,
            batch_size=self.local_batch,
            shuffle=False,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self) -> dict[str, float]:
        """Run one training epoch; return the mean of each loss component over its micro-batches (all processes)."""
        from tqdm.auto import tqdm

        config = self.config
        accum = config.grad_accum_steps
        self.task.train()
        loader = self._train_loader()
        steps_in_epoch = self._steps_per_epoch()
        totals: dict[str, torch.Tensor] = {}
        micro_batches = steps = 0
        bar = tqdm(
            total=steps_in_epoch,
            desc=f"epoch {self.epoch + 1}/{config.epochs}",
            disable=not self.progress,
        )
        self.optimizer.zero_grad(set_to_none=True)
        for index, (images, target) in enumerate(loader):
            if steps >= steps_in_epoch:
                break
            images = images.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            if self.mixup is not None:
                images, target = self.mixup(images, target)
            if self.eraser is not None:
                images = self.eraser(images)
            completes_step = index % accum == accum - 1
            sync = completes_step or not self.dist.distributed
            with contextlib.nullcontext() if sync else self.model.no_sync():
                with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.use_amp):
                    losses = self.model(images, target)
                self.scaler.scale(losses["loss"] / accum).backward()
            for name, value in losses.items():
                if name != "output":
                    totals[name] = totals.get(name, 0.0) + value.detach().float()
            micro_batches += 1
            if not completes_step:
                continue
            if config.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(self.task.trainable.parameters(), config.clip_grad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.optimizer.zero_grad(set_to_none=True)
            self.step += 1
            steps += 1
            if self.ema is not None:
                self.ema.update(self.task.student, step=self.step)
            if self.scheduler is not None and config.sched_on_updates:
                self.scheduler.step_update(self.step)
            bar.update(1)
            if self.progress and steps % 10 == 0:
                bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        bar.close()
        names = sorted(totals)
        means = torch.stack([totals[n] for n in names]).double() / max(micro_batches, 1) if names else None
        if means is not None and self.dist.distributed:
            dist.all_reduce(means)
            means /= self.dist.world_size
        result = {n: float(v) for n, v in zip(names, means.tolist())} if means is not None else {}
        return result | {"steps": steps}

    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Cross-entropy, top-1 and top-5 accuracy (percent) of ``model`` (default: the student) on the validation set.

        In a distributed run every process evaluates its shard and the sums are reduced, so each image counts once.
        """
        return evaluate_model(
            model if model is not None else self.task.student,
            self._val_loader(),
            self.device,
            num_classes=self.num_classes,
            amp=self.use_amp,
            limit_batches=self.config.limit_val_batches,
            reduce=self.dist.distributed,
        )

    def _distribute_bn(self) -> None:
        """Average (or broadcast) per-device BatchNorm statistics before evaluation, as timm's train.py."""
        if not self.dist.distributed or self.config.sync_bn or self.config.dist_bn == "none":
            return
        from timm.utils import distribute_bn

        reduce = self.config.dist_bn == "reduce"
        distribute_bn(self.task.student, self.dist.world_size, reduce)
        if self.ema is not None:
            distribute_bn(self.ema.module, self.dist.world_size, reduce)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: tensors and plain types only (loadable with ``weights_only=True``). The
        schedule is not stored: a resume rebuilds it from the recipe and steps it to the saved epoch and step."""
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.student_timm_name,
            "num_classes": int(self.num_classes),
            "epoch": self.epoch,
            "step": self.step,
            "config": self.config.to_dict(),
            "eval_transform": self.eval_transform,
            "student": self.task.student.state_dict(),
            "branches": self.task.trainable.branches.state_dict(),
            "adapters": self.task.trainable.adapters.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "best": {key: dict(value) for key, value in self.best.items()},
            "versions": _versions(),
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` atomically (default: ``output_dir/last.pth``)."""
        return save_checkpoint(self.state_dict(), path or self.checkpoint_path)

    def resume(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` for the same models and method (any number of processes)."""
        state = read_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(f"{path} is not a cka-probe training checkpoint (format {state.get('format')!r})")
        saved = state["config"]
        for key in _IDENTITY_KEYS:
            if saved.get(key) != getattr(self.config, key):
                raise CheckpointError(
                    f"checkpoint {path} was written with {key}={saved.get(key)!r}, this run has "
                    f"{key}={getattr(self.config, key)!r}; resume with the config it was written with"
                )
        check_state_dict(self.task.student, state["student"], f"checkpoint {path}")
        self.task.student.load_state_dict(state["student"])
        check_state_dict(
            self.task.trainable.branches,
            state["branches"],
            f"checkpoint {path} (branches)",
        )
        self.task.trainable.branches.load_state_dict(state["branches"])
        check_state_dict(
            self.task.trainable.adapters,
            state["adapters"],
            f"checkpoint {path} (adapters)",
        )
        self.task.trainable.adapters.load_state_dict(state["adapters"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        if self.scheduler is not None:
            # timm's train.py: the schedule of this run's epochs, stepped to the resumed epoch. The saved
            # scheduler state is not loaded: it would keep the old length, and the epochs a resume adds
            # would run past its end (at min_lr, 0 in some recipes) instead of along the longer schedule.
            self.scheduler.step(self.epoch)
        self.step = int(state["step"])
        if self.scheduler is not None and self.config.sched_on_updates:
            self.scheduler.step_update(self.step)
        self.best = {key: dict(value) for key, value in state.get("best", {}).items()}

    # ------------------------------------------------------------------ the run

    def fit(self, resume: str | Path | None = None, stop_after: int | None = None) -> TrainResult:
        """Train from the current epoch to ``config.epochs``.

        Args:
            resume: a checkpoint path, or ``"last"`` for ``output_dir/last.pth``, to continue from.
            stop_after: run at most this many epochs in this call (the run can be resumed later).
        """
        if resume is not None:
            self.resume(self.checkpoint_path if str(resume) == "last" else resume)
            if self.dist.is_main:
                _truncate_metrics(self.metrics_path, self.epoch)
                _truncate_summary(self.summary_path, self.epoch)
        elif self.dist.is_main:
            self._claim_output_dir()
        self._barrier()
        result = TrainResult(self.output_dir, self.checkpoint_path)
        last_epoch = self.config.epochs if stop_after is None else min(self.config.epochs, self.epoch + stop_after)
        while self.epoch < last_epoch:
            started = time.perf_counter()
            _seed_everything(_epoch_seed(self.config.seed, self.epoch, self.dist.rank))
            lr = self.optimizer.param_groups[0]["lr"]
            train_metrics = self.train_epoch()
            trained = time.perf_counter()
            self._distribute_bn()
            record: dict[str, Any] = {
                "epoch": self.epoch + 1,
                "step": self.step,
                "lr": lr,
                "train": train_metrics,
            }
            record["val"] = self.evaluate()
            record["eval_transform"] = self.eval_transform
            if self.ema is not None:
                record["val_ema"] = self.evaluate(self.ema.module)
            if self._measures_cka(self.epoch + 1):
                measured = time.perf_counter()
                record["cka_to_teacher"] = {"n": self.monitor.n, **self.monitor.measure()}
                record["cka_seconds"] = round(time.perf_counter() - measured, 3)
                if not (self.output_dir / CKA_PROVENANCE_NAME).exists():
                    self._write_cka_provenance(record["cka_seconds"])
            self.epoch += 1
            if self.scheduler is not None:
                self.scheduler.step(self.epoch)
            record["train_seconds"] = round(trained - started, 3)
            record["seconds"] = round(time.perf_counter() - started, 3)
            improved = self._update_best(record)
            if self.dist.is_main:
                self._write_epoch(record, improved)
            self._barrier()
            result.history.append(record)
        if self.monitor is not None and result.history:
            self.draw_cka()
        if (self.output_dir / BEST_NAME).exists():
            result.best = self.output_dir / BEST_NAME
        if (self.output_dir / BEST_EMA_NAME).exists():
            result.best_ema = self.output_dir / BEST_EMA_NAME
        return result

    def _measures_cka(self, epoch: int) -> bool:
        """Whether epoch ``epoch`` (1-based) ends with a CKA measurement: every ``cka_every``-th, and the last."""
        every = self.config.cka_every
        return self.monitor is not None and (epoch % every == 0 or epoch == self.config.epochs)

    def draw_cka(self) -> Path | None:
        """Draw ``cka_to_teacher.png`` from every CKA record of ``metrics.jsonl`` (``None`` when there is none)."""
        from .monitor import draw_cka

        config = self.config
        return draw_cka(
            self.metrics_path,
            self.output_dir / CKA_FIGURE_NAME,
            student=config.student,
            teacher=str(config.teacher),
            data=config.dataset,
            method=config.method,
        )

    def _update_best(self, record: dict[str, Any]) -> list[str]:
        improved = []
        for key, metrics in (
            ("student", record["val"]),
            ("ema", record.get("val_ema")),
        ):
            if metrics is None or metrics["n"] == 0:
                continue
            if key not in self.best or metrics["top1"] > self.best[key]["top1"]:
                self.best[key] = {
                    "top1": float(metrics["top1"]),
                    "epoch": int(record["epoch"]),
                }
                improved.append(key)
        return improved

    def _write_epoch(self, record: dict[str, Any], improved: list[str]) -> None:
        from timm.utils import update_summary

        last = self.save()
        for key in improved:
            target = self.output_dir / (BEST_NAME if key == "student" else BEST_EMA_NAME)
            _atomic_copy(last, target)
        _append_jsonl(self.metrics_path, record)
        train_metrics = {"loss": record["train"].get("loss", float("nan"))}
        eval_metrics = {k: record["val"][k] for k in ("loss", "top1", "top5")}
        if "val_ema" in record:
            eval_metrics["ema_top1"] = record["val_ema"]["top1"]
        eval_metrics["seconds"] = record["seconds"]
        update_summary(
            record["epoch"],
            train_metrics,
            eval_metrics,
            str(self.summary_path),
            lr=record["lr"],
        )
        if self.echo is not None:
            self.echo(epoch_line(record, self.config.epochs))

    def _write_cka_provenance(self, seconds: float) -> None:
        """``cka_provenance.json``: the provenance header of the run's CKA to the teacher (the one header of every
        output, :func:`~cka_probe.engine.provenance.output_header`), written with the first measurement."""
        from .monitor import PROBE_SEED

        config = self.config
        teacher_weights = config.teacher_checkpoint or ("pretrained" if config.teacher_pretrained else "random")
        models = {
            "student": {"name": config.student, "weights": "training"},
            **({"ema": {"name": config.student, "weights": "training (EMA)"}} if "ema" in self.monitor.taps else {}),
            "teacher": {"name": config.teacher, "weights": teacher_weights},
        }
        data = {"source": config.dataset, "split": "validation", "n": self.monitor.n, "seed": PROBE_SEED}
        header = self.monitor.provenance(models, data, seconds={"total": seconds})
        (self.output_dir / CKA_PROVENANCE_NAME).write_text(json.dumps(header, indent=2) + "\n")

    def _barrier(self) -> None:
        if self.dist.distributed:
            dist.barrier()

    def _claim_output_dir(self) -> None:
        existing = [self.checkpoint_path, self.metrics_path, self.summary_path]
        if any(path.exists() for path in existing):
            if not self.overwrite:
                raise OutputExistsError(
                    f"{self.output_dir} already holds a run; resume it (--resume) or allow overwriting (--overwrite)"
                )
            for path in (
                self.metrics_path,
                self.summary_path,
                self.output_dir / BEST_NAME,
                self.output_dir / BEST_EMA_NAME,
            ):
                path.unlink(missing_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(json.dumps(self.config.to_dict(), indent=2) + "\n")


def build_optimizer(trainable: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    """timm's optimiser over ``trainable`` with the recipe's weight-decay groups.

    Biases and norm weights (1-D) are never decayed (timm's rule). Position embeddings, class tokens and
    relative-position bias tables are decayed unless ``weight_decay_exempt_embeddings`` (the official
    OFA-KD runs decay them: their optimiser sees the distiller, which has no ``no_weight_decay()``).
    """
    from timm.optim import create_optimizer_v2, param_groups_weight_decay

    exempt = ()
    if config.weight_decay_exempt_embeddings and hasattr(trainable, "no_weight_decay"):
        exempt = trainable.no_weight_decay()
    groups = param_groups_weight_decay(trainable, config.weight_decay, no_weight_decay_list=exempt)
    try:
        return create_optimizer_v2(
            groups, opt=config.opt, lr=config.lr, weight_decay=config.weight_decay, momentum=config.momentum
        )
    except (ValueError, AssertionError) as exc:
        raise ConfigError(f"optimizer {config.opt!r}: {' '.join(str(exc).split())}") from None


def build_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig, updates_per_epoch: int = 0):
    """timm's learning-rate scheduler of the recipe (``None`` for ``sched: none``): stepped per epoch, or per
    optimiser update with ``sched_on_updates`` (then ``updates_per_epoch`` converts its epochs to updates)."""
    from timm.scheduler import create_scheduler_v2

    scheduler, _ = create_scheduler_v2(
        optimizer,
        sched=config.sched,
        num_epochs=config.epochs,
        decay_epochs=config.decay_epochs,
        decay_milestones=list(config.decay_milestones),
        decay_rate=config.decay_rate,
        min_lr=config.min_lr,
        warmup_lr=config.warmup_lr,
        warmup_epochs=config.warmup_epochs,
        step_on_epochs=not config.sched_on_updates,
        updates_per_epoch=updates_per_epoch,
    )
    if scheduler is None and config.sched != "none":
        raise ConfigError(f"unknown sched {config.sched!r}; use {one_of(SCHEDULES)}")
    return scheduler


@torch.no_grad()
def evaluate_model(
    model: nn.Module,
    loader: DataLoader,
    device: torch.device,
    num_classes: int,
    amp: bool = False,
    limit_batches: int | None = None,
    reduce: bool = False,
) -> dict[str, float]:
    """Mean cross-entropy, top-1 and top-5 accuracy (percent, timm's ``accuracy``) of ``model`` over ``loader``.

    Args:
        model: classifier; put in eval mode for the pass, then back.
        loader: ``(images, class index)`` batches.
        device: where the model runs.
        num_classes: classes (top-5 becomes top-``num_classes`` below 5 classes).
        amp: float16 autocast (CUDA).
        limit_batches: stop after this many batches.
        reduce: sum the counts over the processes of a distributed run.

    Returns:
        ``{"loss", "top1", "top5", "n"}``; NaN metrics and ``n = 0`` for an empty loader.
    """
    from timm.utils import accuracy

    was_training = model.training
    model.eval()
    sums = torch.zeros(4, dtype=torch.float64, device=device)  # loss, top-1 hits, top-5 hits, images
    k5 = min(5, num_classes)
    try:
        for batch_index, (images, target) in enumerate(loader):
            if limit_batches is not None and batch_index >= limit_batches:
                break
            images = images.to(device, non_blocking=True)
            target = target.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                logits = model(images)
            logits = logits.float()
            top1, top5 = accuracy(logits, target, topk=(1, k5))  # percent of the batch
            n = len(target)
            loss = float(nn.functional.cross_entropy(logits, target, reduction="sum"))
            hits = [round(float(top1) * n / 100.0), round(float(top5) * n / 100.0)]
            sums += torch.tensor([loss, *hits, n], dtype=torch.float64, device=device)
    finally:
        model.train(was_training)
    if reduce:
        dist.all_reduce(sums)
    loss, hits1, hits5, count = sums.tolist()
    if count == 0:
        return {"loss": float("nan"), "top1": float("nan"), "top5": float("nan"), "n": 0}
    return {"loss": loss / count, "top1": 100.0 * hits1 / count, "top5": 100.0 * hits5 / count, "n": int(count)}


def epoch_line(record: dict[str, Any], epochs: int) -> str:
    """One line per epoch: train loss, val top-1 / top-5, EMA top-1 and seconds.

    Example:
        >>> epoch_line({"epoch": 3, "train": {"loss": 1.5}, "val": {"top1": 71.2, "top5": 90.1}, "seconds": 12.0}, 100)
        'epoch 3/100  train loss 1.5000  val top-1 71.20%  top-5 90.10%  12.0 s'
    """
    parts = [
        f"epoch {record['epoch']}/{epochs}",
        f"train loss {record['train'].get('loss', float('nan')):.4f}",
        f"val top-1 {record['val']['top1']:.2f}%",
        f"top-5 {record['val']['top5']:.2f}%",
    ]
    if "val_ema" in record:
        parts.append(f"EMA top-1 {record['val_ema']['top1']:.2f}%")
    parts.append(f"{record['seconds']:.1f} s")
    return "  ".join(parts)


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    datasets: tuple[Dataset, Dataset] | None = None,
    echo: Callable[[str], None] | None = None,
) -> TrainResult:
    """Run :class:`Trainer` for ``config``; ``resume`` is a checkpoint path or ``"last"`` (``output_dir/last.pth``)."""
    trainer = Trainer(config, datasets=datasets, progress=progress, overwrite=overwrite, echo=echo)
    return trainer.fit(resume=resume)


def load_initial_checkpoint(model: nn.Module, path: str | Path, model_label: str) -> None:
    """Load the student weights of ``path`` (a run, an official checkpoint, a state dict) into ``model``.

    Every tensor must be there and fit (:func:`cka_probe.models.load_checkpoint`, strict), except a classifier
    of another number of classes: it is left at the model's fresh initialisation, as timm does when it loads
    pretrained weights into a model of another ``num_classes`` (fine-tuning ImageNet weights on CIFAR-100).
    """
    selected = select_state_dict(read_checkpoint(path), path, "auto")
    timm_name = model.pretrained_cfg.get("architecture", model_label)
    classes = checkpoint_num_classes(selected.state_dict, timm_name)
    if classes is None or classes == getattr(model, "num_classes", classes):
        load_weights(model, path, model_label=model_label, strict=True, selected=selected)
        return
    classifier = model.pretrained_cfg.get("classifier")
    prefixes = tuple(f"{name}." for name in ([classifier] if isinstance(classifier, str) else classifier))
    kept = {k: v for k, v in selected.state_dict.items() if not k.startswith(prefixes)}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", CheckpointKeysWarning)
        loaded = load_weights(
            model, path, model_label=model_label, selected=SelectedState(kept, selected.key, selected.model_name)
        )
    missing = [k for k in loaded.missing_keys if not k.startswith(prefixes)]
    if missing or loaded.unexpected_keys:
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit {model_label}: {len(missing)} missing key(s) {missing[:2]}, "
            f"{len(loaded.unexpected_keys)} unexpected key(s) {list(loaded.unexpected_keys[:2])}; "
            "give initial_checkpoint a checkpoint of the student's architecture"
        )


def _create_model(name: str, num_classes: int, kwargs: dict, pretrained: bool, weights_fix: str = "") -> nn.Module:
    """A timm model; ``pretrained`` weights come through :func:`cka_probe.models.create_pretrained` (one line
    naming ``weights_fix`` when they cannot be had offline)."""
    import timm

    from ..errors import UnknownModelError
    from ..models import create_pretrained, resolve_name

    try:
        timm_name = resolve_name(name).timm_name
    except UnknownModelError:
        raise ConfigError(f"unknown timm model {name!r}; see timm.list_models()") from None
    try:
        if pretrained:
            return create_pretrained(timm_name, alternatives=weights_fix, **{"num_classes": num_classes, **kwargs})
        return timm.create_model(timm_name, pretrained=False, **{"num_classes": num_classes, **kwargs})
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(f"unknown timm model {name!r}; see timm.list_models()") from None
        raise
    except TypeError as exc:
        raise ConfigError(f"timm model {name!r} does not take {sorted(kwargs)}: {exc}") from None


def _dataset_classes(dataset: Dataset, config: TrainConfig) -> int:
    from .data import DATASET_CLASSES

    inner = getattr(dataset, "dataset", dataset)  # through a Subset
    classes = getattr(inner, "classes", None)
    if classes:
        return len(classes)
    return DATASET_CLASSES[config.dataset]


def _epoch_seed(seed: int, epoch: int, rank: int) -> int:
    """One seed per (run seed, epoch, rank): the generators' state at an epoch's start depends on nothing else."""
    return (seed * 1_000_003 + epoch * 10_007 + rank) % (2**32)


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _atomic_copy(source: Path, target: Path) -> None:
    from .._files import atomic_path

    with atomic_path(target) as tmp:
        shutil.copyfile(source, tmp)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep only the records of epochs a resumed checkpoint has completed."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines() if line.strip() and json.loads(line)["epoch"] <= epochs_done]
    path.write_text("".join(line + "\n" for line in kept))


def _truncate_summary(path: Path, epochs_done: int) -> None:
    """The same for ``summary.csv`` (header kept)."""
    if not path.exists():
        return
    with open(path, newline="") as file:
        rows = list(csv.reader(file))
    if not rows:
        return
    kept = [rows[0]] + [row for row in rows[1:] if row and int(float(row[0])) <= epochs_done]
    with open(path, "w", newline="") as file:
        csv.writer(file).writerows(kept)


def _versions() -> dict[str, str]:
    import timm

    from .._version import __version__

    return {
        "cka_probe": str(__version__),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
    }
