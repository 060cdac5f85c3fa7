"""The training loop: timm's optimiser, scheduler, EMA, mixup and transforms around a DistillationTask.

Per epoch: train (teacher frozen, in eval mode, under ``no_grad``; student, branches and adapters
updated together), evaluate top-1 / top-5 of the student (and of its EMA), write a checkpoint
atomically, append one JSON line to ``metrics.jsonl``.

Resuming from a checkpoint continues exactly: model, branch, optimiser, scheduler, EMA and
grad-scaler states and the Python / NumPy / torch RNG states are restored, and each epoch's data
order comes from a generator seeded with ``(seed, epoch)``, so the resumed run takes the same next
step as an uninterrupted one.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .._device import resolve_device
from ..errors import CheckpointError, ConfigError, OutputExistsError
from .checkpoint import (
    CHECKPOINT_FORMAT,
    capture_rng_state,
    check_state_dict,
    load_checkpoint,
    load_model_weights,
    restore_rng_state,
    save_checkpoint,
)
from .config import TrainConfig
from .task import DistillationTask

__all__ = ["TrainResult", "Trainer", "train"]

CHECKPOINT_NAME = "last.pth"
METRICS_NAME = "metrics.jsonl"

# Settings that define what is trained; a checkpoint must agree on them to be resumed.
_IDENTITY_KEYS = (
    "method", "student", "student_kwargs", "teacher", "teacher_kwargs", "num_classes", "img_size",
    "ofa_stages", "fitnet_stages", "ema_decay",
)  # fmt: skip


@dataclass
class TrainResult:
    """What a run leaves behind.

    Attributes:
        output_dir: folder of the checkpoint and the metrics log.
        checkpoint: path of the last checkpoint.
        history: one dict per epoch run in this call, as written to ``metrics.jsonl``.
    """

    output_dir: Path
    checkpoint: Path
    history: list[dict[str, Any]] = field(default_factory=list)

    @property
    def final(self) -> dict[str, Any]:
        """The last epoch's record (empty when no epoch was run)."""
        return self.history[-1] if self.history else {}


class Trainer:
    """One training run of ``config``.

    Args:
        config: the run's settings.
        datasets: ``(train, val)`` data sets yielding ``(image tensor, class index)``; by default
            :func:`~cka_probe.ofa.data.build_datasets`.
        progress: show tqdm progress bars.
        overwrite: allow writing into an output folder that already holds a run.
    """

    def __init__(
        self,
        config: TrainConfig,
        datasets: tuple[Dataset, Dataset] | None = None,
        progress: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.config = config
        self.progress = progress
        self.output_dir = Path(config.output_dir)
        self.checkpoint_path = self.output_dir / CHECKPOINT_NAME
        self.metrics_path = self.output_dir / METRICS_NAME
        self.overwrite = overwrite
        self.device = resolve_device(config.device)
        self.use_amp = bool(config.amp) and self.device.type == "cuda"
        _seed_everything(config.seed)

        if datasets is None:
            from .data import build_datasets

            datasets = build_datasets(config)
        self.train_set, self.val_set = datasets
        if len(self.train_set) < config.batch_size:
            raise ConfigError(
                f"batch_size {config.batch_size} exceeds the {len(self.train_set)} training images; lower batch_size"
            )
        self.num_classes = config.num_classes or _dataset_classes(
            self.train_set, config
        )

        student = _create_model(
            config.student, self.num_classes, config.student_kwargs, pretrained=False
        )
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
        ).to(self.device)

        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2
        from timm.utils import ModelEmaV3

        try:
            self.optimizer = create_optimizer_v2(
                self.task.trainable,
                opt=config.opt,
                lr=config.lr,
                weight_decay=config.weight_decay,
                momentum=config.momentum,
            )
        except (ValueError, AssertionError) as exc:
            raise ConfigError(
                f"optimizer {config.opt!r}: {' '.join(str(exc).split())}"
            ) from None
        self.scheduler, _ = create_scheduler_v2(
            self.optimizer,
            sched=config.sched,
            num_epochs=config.epochs,
            decay_milestones=list(config.decay_milestones),
            decay_rate=config.decay_rate,
            min_lr=config.min_lr,
            warmup_lr=config.warmup_lr,
            warmup_epochs=config.warmup_epochs,
        )
        if self.scheduler is None and config.sched != "none":
            raise ConfigError(
                f"unknown sched {config.sched!r}; use cosine, multistep, step or none"
            )
        self.ema = (
            ModelEmaV3(self.task.student, decay=config.ema_decay)
            if config.ema_decay
            else None
        )
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.use_amp)
        self.epoch = 0  # epochs completed
        self.step = 0  # optimiser steps taken

    # ------------------------------------------------------------------ building blocks

    def _create_teacher(self) -> nn.Module:
        config = self.config
        if not config.teacher_checkpoint and not config.teacher_pretrained:
            raise ConfigError(
                f"method {config.method!r} needs a trained teacher: set teacher_checkpoint=<path> (or teacher_pretrained=true)"
            )
        teacher = _create_model(
            config.teacher,
            self.num_classes,
            config.teacher_kwargs,
            config.teacher_pretrained,
        )
        if config.teacher_checkpoint:
            load_model_weights(teacher, config.teacher_checkpoint)
        return teacher

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

    def _create_criterion(self) -> nn.Module:
        from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

        if self.mixup is not None:
            return SoftTargetCrossEntropy()
        if self.config.smoothing > 0:
            return LabelSmoothingCrossEntropy(smoothing=self.config.smoothing)
        return nn.CrossEntropyLoss()

    def _loader(self, dataset: Dataset, train: bool, epoch: int) -> DataLoader:
        generator = torch.Generator().manual_seed(self.config.seed * 1_000_003 + epoch)
        return DataLoader(
            dataset,
            batch_size=self.config.batch_size,
            shuffle=train,
            drop_last=train,
            num_workers=self.config.workers,
            pin_memory=self.device.type == "cuda",
            generator=generator,
        )

    # ------------------------------------------------------------------ one epoch

    def train_epoch(self) -> dict[str, float]:
        """Run one training epoch; return the mean of each loss component over its steps."""
        from tqdm.auto import tqdm

        config = self.config
        self.task.train()
        loader = self._loader(self.train_set, train=True, epoch=self.epoch)
        totals: dict[str, torch.Tensor] = {}
        steps = 0
        bar = tqdm(
            loader,
            total=_limited_len(loader, config.limit_train_batches),
            desc=f"epoch {self.epoch + 1}/{config.epochs}",
            disable=not self.progress,
            leave=False,
        )
        for batch_index, (images, target) in enumerate(bar):
            if (
                config.limit_train_batches is not None
                and batch_index >= config.limit_train_batches
            ):
                break
            images = images.to(self.device, non_blocking=True)
            target = target.to(self.device, non_blocking=True)
            if self.mixup is not None:
                images, target = self.mixup(images, target)
            with torch.autocast(
                self.device.type, dtype=torch.float16, enabled=self.use_amp
            ):
                losses = self.task(images, target)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(losses["loss"]).backward()
            if config.clip_grad is not None:
                self.scaler.unscale_(self.optimizer)
                torch.nn.utils.clip_grad_norm_(
                    self.task.trainable.parameters(), config.clip_grad
                )
            self.scaler.step(self.optimizer)
            self.scaler.update()
            self.step += 1
            if self.ema is not None:
                self.ema.update(self.task.student, step=self.step)
            for name, value in losses.items():
                if name != "output":
                    totals[name] = totals.get(name, 0.0) + value.detach().float()
            steps += 1
            if self.progress and batch_index % 10 == 0:
                bar.set_postfix(loss=f"{losses['loss'].item():.4f}")
        return {
            name: float(total) / max(steps, 1) for name, total in totals.items()
        } | {"steps": steps}

    @torch.no_grad()
    def evaluate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Cross-entropy, top-1 and top-5 accuracy (percent) of ``model`` (default: the student) on the validation set."""
        model = model if model is not None else self.task.student
        was_training = model.training
        model.eval()
        loader = self._loader(self.val_set, train=False, epoch=0)
        total_loss = correct1 = correct5 = count = 0.0
        k5 = min(5, self.num_classes)
        try:
            for batch_index, (images, target) in enumerate(loader):
                if (
                    self.config.limit_val_batches is not None
                    and batch_index >= self.config.limit_val_batches
                ):
                    break
                images = images.to(self.device, non_blocking=True)
                target = target.to(self.device, non_blocking=True)
                with torch.autocast(
                    self.device.type, dtype=torch.float16, enabled=self.use_amp
                ):
                    logits = model(images)
                logits = logits.float()
                total_loss += float(
                    nn.functional.cross_entropy(logits, target, reduction="sum")
                )
                top = logits.topk(k5, dim=1).indices
                hits = top.eq(target[:, None])
                correct1 += float(hits[:, 0].sum())
                correct5 += float(hits.any(dim=1).sum())
                count += len(target)
        finally:
            model.train(was_training)
        if count == 0:
            return {
                "loss": float("nan"),
                "top1": float("nan"),
                "top5": float("nan"),
                "n": 0,
            }
        return {
            "loss": total_loss / count,
            "top1": 100.0 * correct1 / count,
            "top5": 100.0 * correct5 / count,
            "n": int(count),
        }

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to continue: tensors and plain types only (loadable with ``weights_only=True``)."""
        return {
            "format": CHECKPOINT_FORMAT,
            "epoch": self.epoch,
            "step": self.step,
            "config": self.config.to_dict(),
            "student": self.task.student.state_dict(),
            "branches": self.task.trainable.branches.state_dict(),
            "adapters": self.task.trainable.adapters.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict()
            if self.scheduler is not None
            else {},
            "ema": self.ema.module.state_dict() if self.ema is not None else None,
            "scaler": self.scaler.state_dict(),
            "rng": capture_rng_state(),
            "versions": _versions(),
        }

    def save(self, path: str | Path | None = None) -> Path:
        """Write :meth:`state_dict` atomically (default: ``output_dir/last.pth``)."""
        return save_checkpoint(self.state_dict(), path or self.checkpoint_path)

    def resume(self, path: str | Path) -> None:
        """Restore a checkpoint written by :meth:`save` for the same models and method."""
        state = load_checkpoint(path, map_location=self.device)
        if state.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError(
                f"{path} is not a cka-probe training checkpoint (format {state.get('format')!r})"
            )
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
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        if self.ema is not None:
            self.ema.module.load_state_dict(state["ema"])
        self.scaler.load_state_dict(state["scaler"])
        self.epoch = int(state["epoch"])
        self.step = int(state["step"])
        restore_rng_state(state["rng"])

    # ------------------------------------------------------------------ the run

    def fit(
        self, resume: str | Path | None = None, stop_after: int | None = None
    ) -> TrainResult:
        """Train from the current epoch to ``config.epochs``.

        Args:
            resume: a checkpoint path, or ``"last"`` for ``output_dir/last.pth``, to continue from.
            stop_after: run at most this many epochs in this call (the run can be resumed later).
        """
        if resume is not None:
            self.resume(self.checkpoint_path if str(resume) == "last" else resume)
            _truncate_metrics(self.metrics_path, self.epoch)
        else:
            self._claim_output_dir()
        result = TrainResult(self.output_dir, self.checkpoint_path)
        last_epoch = (
            self.config.epochs
            if stop_after is None
            else min(self.config.epochs, self.epoch + stop_after)
        )
        while self.epoch < last_epoch:
            started = time.perf_counter()
            lr = self.optimizer.param_groups[0]["lr"]
            train_metrics = self.train_epoch()
            trained = time.perf_counter()
            record: dict[str, Any] = {
                "epoch": self.epoch + 1,
                "step": self.step,
                "lr": lr,
                "train": train_metrics,
            }
            record["val"] = self.evaluate()
            if self.ema is not None:
                record["val_ema"] = self.evaluate(self.ema.module)
            self.epoch += 1
            if self.scheduler is not None:
                self.scheduler.step(self.epoch)
            record["train_seconds"] = round(trained - started, 3)
            record["seconds"] = round(time.perf_counter() - started, 3)
            self.save()
            _append_jsonl(self.metrics_path, record)
            result.history.append(record)
        return result

    def _claim_output_dir(self) -> None:
        if self.checkpoint_path.exists() or self.metrics_path.exists():
            if not self.overwrite:
                raise OutputExistsError(
                    f"{self.output_dir} already holds a run; resume it (--resume) or allow overwriting (--overwrite)"
                )
            self.metrics_path.unlink(missing_ok=True)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        (self.output_dir / "config.json").write_text(
            json.dumps(self.config.to_dict(), indent=2) + "\n"
        )


def train(
    config: TrainConfig,
    resume: str | Path | None = None,
    overwrite: bool = False,
    progress: bool = False,
    datasets: tuple[Dataset, Dataset] | None = None,
) -> TrainResult:
    """Run :class:`Trainer` for ``config``; ``resume`` is a checkpoint path or ``"last"`` (``output_dir/last.pth``)."""
    trainer = Trainer(config, datasets=datasets, progress=progress, overwrite=overwrite)
    return trainer.fit(resume=resume)


def _create_model(
    name: str, num_classes: int, kwargs: dict, pretrained: bool
) -> nn.Module:
    import timm

    try:
        return timm.create_model(
            name, pretrained=pretrained, **{"num_classes": num_classes, **kwargs}
        )
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ConfigError(
                f"unknown timm model {name!r}; see timm.list_models()"
            ) from None
        raise
    except TypeError as exc:
        raise ConfigError(
            f"timm model {name!r} does not take {sorted(kwargs)}: {exc}"
        ) from None


def _dataset_classes(dataset: Dataset, config: TrainConfig) -> int:
    from .data import DATASET_CLASSES

    inner = getattr(dataset, "dataset", dataset)  # through a Subset
    classes = getattr(inner, "classes", None)
    if classes:
        return len(classes)
    return DATASET_CLASSES[config.dataset]


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _limited_len(loader: DataLoader, limit: int | None) -> int:
    return len(loader) if limit is None else min(len(loader), limit)


def _append_jsonl(path: Path, record: dict[str, Any]) -> None:
    with open(path, "a") as file:
        file.write(json.dumps(record) + "\n")


def _truncate_metrics(path: Path, epochs_done: int) -> None:
    """Keep only the records of epochs a resumed checkpoint has completed."""
    if not path.exists():
        return
    kept = [
        line
        for line in path.read_text().splitlines()
        if line.strip() and json.loads(line)["epoch"] <= epochs_done
    ]
    path.write_text("".join(line + "\n" for line in kept))


def _versions() -> dict[str, str]:
    import timm

    from .. import __version__

    return {
        "cka_probe": str(__version__),
        "torch": str(torch.__version__),
        "timm": str(timm.__version__),
    }
