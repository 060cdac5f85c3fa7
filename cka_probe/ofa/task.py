"""The distillation task: one forward pass of student (and teacher), returning a dict of named losses.

After timm's training tasks: ``task(images, target)`` returns ``{"loss": total, "output": student
logits, <name>: component, ...}``; the components are unweighted, ``loss`` is their weighted sum.
The teacher runs in eval mode under ``torch.no_grad()``; its parameters never require gradients.

Methods and their components:

==========  ================================================================  =====================================
method      loss                                                              components
==========  ================================================================  =====================================
scratch     ``w_gt * CE``                                                     ``ce``
kd          ``w_gt * CE + w_kd * KD_T`` (Hinton, ``T**2`` scaled)             ``ce``, ``kd``
fitnet      ``w_gt * CE + w_fit * sum_s MSE(adapter_s(f^s_s), f^t_s)``        ``ce``, ``fitnet_stage{s}``
ofa         ``w_gt * CE + w_kd * OFA(z_s) + sum_s w_s * OFA(branch_s(f^s_s))``  ``ce``, ``ofa_logits``, ``ofa_stage{s}``
ofa+fitnet  the ``ofa`` loss ``+ w_fit * sum_s MSE(adapter_s(f^s_s), f^t_s)``   both sets
==========  ================================================================  =====================================

``CE`` is the criterion the trainer passes (soft-target CE under mixup / cutmix, label-smoothing CE,
or plain CE). For OFA, ``gamma`` may be one value or one per stage plus a last one for the
logits, as in the reference code (where it is called ``eps``); the OFA weight of the branches may be
one value or one per stage. Both lists are paired with the stages in the order the user gives them,
as the reference code pairs ``--ofa-eps`` with ``--ofa-stage`` (``zip`` of the two lists), so stages
``[3, 1]`` with gammas ``[a, b, c]`` give stage 3 ``a``, stage 1 ``b`` and the logits ``c``. A stage
listed twice is refused (the reference would build one branch and train it twice).

``ofa+fitnet`` (the reference's issues #5 and #10: OFA with FitNet hints on heterogeneous pairs) adds
FitNet's adapters and hint losses on ``fitnet_stages``, weighted by ``fitnet_loss_weight``, to
everything ``ofa`` trains; the teacher runs once for its logits and its stage features.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from .._choices import FITNET_METHODS, METHODS, OFA_METHODS
from ..errors import ConfigError, ModelMismatchError
from .branches import build_branch
from .fitnet import FitNetAdapter
from .losses import hint_loss, kd_loss, ofa_loss
from .taps import StageTaps, pre_logit_width

__all__ = ["METHODS", "DistillationTask", "TrainableModules"]


class TrainableModules(nn.Module):
    """Everything the optimiser updates: the student, the OFA branches and the FitNet adapters.

    Keys of ``branches`` / ``adapters`` are ``"stage{s}"``.
    """

    def __init__(self, student: nn.Module) -> None:
        super().__init__()
        self.student = student
        self.branches = nn.ModuleDict()
        self.adapters = nn.ModuleDict()

    def no_weight_decay(self) -> set[str]:
        """The student's own no-weight-decay names (position embeddings, class token, ...), prefixed."""
        names = self.student.no_weight_decay() if hasattr(self.student, "no_weight_decay") else set()
        return {f"student.{name}" for name in names}


class DistillationTask(nn.Module):
    """Student, frozen teacher and the method's extra modules; ``forward`` returns named losses.

    Args:
        method: one of :data:`METHODS`.
        student: timm model to train.
        teacher: timm model, frozen here; required unless ``method == "scratch"``.
        criterion: task loss on the student's logits, ``criterion(logits, target)``.
        input_size: ``(C, H, W)`` of the training images, for the dry run that sizes branches/adapters.
        gt_loss_weight: weight of the task loss.
        kd_loss_weight: weight of the logit distillation term (KD, or OFA on the student's logits).
        kd_temperature: Hinton KD temperature.
        ofa_stages: student stages that get a branch (1 to 4), each once, in the order the lists below follow.
        ofa_gamma: one ``gamma``, or one per stage of ``ofa_stages`` (in its order) followed by one for the logits.
        ofa_loss_weight: weight of the branch losses, one value or one per stage of ``ofa_stages`` (in its order).
        ofa_temperature: OFA temperature.
        fitnet_stages: stages whose features are aligned.
        fitnet_loss_weight: weight of the hint losses.
    """

    def __init__(
        self,
        method: str,
        student: nn.Module,
        teacher: nn.Module | None,
        criterion: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        input_size: Sequence[int],
        *,
        gt_loss_weight: float = 1.0,
        kd_loss_weight: float = 1.0,
        kd_temperature: float = 1.0,
        ofa_stages: Sequence[int] = (1, 2, 3, 4),
        ofa_gamma: float | Sequence[float] = 1.0,
        ofa_loss_weight: float | Sequence[float] = 1.0,
        ofa_temperature: float = 1.0,
        fitnet_stages: Sequence[int] = (1, 2, 3, 4),
        fitnet_loss_weight: float = 1.0,
    ) -> None:
        super().__init__()
        if method not in METHODS:
            raise ConfigError(f"unknown method {method!r}; valid methods: {', '.join(METHODS)}")
        self.method = method
        self.trainable = TrainableModules(student)
        self.criterion = criterion
        self.gt_loss_weight = float(gt_loss_weight)
        self.kd_loss_weight = float(kd_loss_weight)
        self.kd_temperature = float(kd_temperature)
        self.ofa_temperature = float(ofa_temperature)
        self.fitnet_loss_weight = float(fitnet_loss_weight)
        self.ofa_stages: list[int] = []
        self.fitnet_stages: list[int] = []
        self.ofa_gamma: list[float] = []
        self.ofa_loss_weight: list[float] = []
        self.student_taps: StageTaps | None = None
        self.teacher_taps: StageTaps | None = None

        if method == "scratch":
            self.teacher = None
            return
        if teacher is None:
            raise ConfigError(f"method {method!r} needs a teacher model")
        _check_pair(student, teacher)
        teacher.eval()
        teacher.requires_grad_(False)
        self.teacher = teacher
        num_classes = int(student.num_classes)
        if method in OFA_METHODS or method in FITNET_METHODS:
            self.student_taps = StageTaps(student, input_size)

        if method in OFA_METHODS:
            self.ofa_stages = _stages_once(self.student_taps, ofa_stages, "ofa_stages")
            self.ofa_gamma = _per_stage(
                ofa_gamma, len(self.ofa_stages) + 1, "ofa_gamma", "one per stage plus one for the logits"
            )
            self.ofa_loss_weight = _per_stage(ofa_loss_weight, len(self.ofa_stages), "ofa_loss_weight", "one per stage")
            d_s, d_t = pre_logit_width(student), pre_logit_width(teacher)
            for stage in self.ofa_stages:
                self.trainable.branches[f"stage{stage}"] = build_branch(
                    self.student_taps.kind, stage, self.student_taps.shapes[stage], d_s, d_t, num_classes
                )
        if method in FITNET_METHODS:
            self.teacher_taps = StageTaps(teacher, input_size)
            self.fitnet_stages = _stages_once(self.student_taps, fitnet_stages, "fitnet_stages")
            self.teacher_taps.check_stages(self.fitnet_stages)
            for stage in self.fitnet_stages:
                self.trainable.adapters[f"stage{stage}"] = FitNetAdapter(
                    self.student_taps.kind,
                    self.teacher_taps.kind,
                    self.student_taps.shapes[stage],
                    self.teacher_taps.shapes[stage],
                )

    @property
    def stages(self) -> list[int]:
        """The stages whose features the student's loss reads: the OFA stages, then any other FitNet stage."""
        return self.ofa_stages + [stage for stage in self.fitnet_stages if stage not in self.ofa_stages]

    @property
    def student(self) -> nn.Module:
        return self.trainable.student

    def train(self, mode: bool = True) -> DistillationTask:
        """Set the trainable modules' mode; the teacher stays in eval mode."""
        super().train(mode)
        if self.teacher is not None:
            self.teacher.eval()
        return self

    def forward(self, images: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
        """Losses of one batch. ``target`` is ``(B,)`` class indices or ``(B, K)`` soft targets."""
        if self.method == "scratch":
            logits = self.student(images)
            parts = {"ce": self.criterion(logits, target)}
            return self._total(logits, parts, {"ce": self.gt_loss_weight})
        if self.method == "kd":
            logits = self.student(images)
            teacher_logits = self._teacher_logits(images)
            parts = {
                "ce": self.criterion(logits, target),
                "kd": kd_loss(logits, teacher_logits, self.kd_temperature),
            }
            return self._total(logits, parts, {"ce": self.gt_loss_weight, "kd": self.kd_loss_weight})
        logits, student_features = self.student_taps(images, self.stages)
        parts = {"ce": self.criterion(logits, target)}
        weights = {"ce": self.gt_loss_weight}
        uses_fitnet = self.method in FITNET_METHODS
        if uses_fitnet:
            with torch.no_grad():
                teacher_logits, teacher_features = self.teacher_taps(images, self.fitnet_stages)
            for stage in self.fitnet_stages:
                aligned, reference = self.trainable.adapters[f"stage{stage}"](
                    student_features[stage], teacher_features[stage]
                )
                parts[f"fitnet_stage{stage}"] = hint_loss(aligned, reference)
                weights[f"fitnet_stage{stage}"] = self.fitnet_loss_weight
        if self.method in OFA_METHODS:
            if not uses_fitnet:
                teacher_logits = self._teacher_logits(images)
            parts["ofa_logits"] = ofa_loss(logits, teacher_logits, target, self.ofa_gamma[-1], self.ofa_temperature)
            weights["ofa_logits"] = self.kd_loss_weight
            for stage, gamma, weight in zip(self.ofa_stages, self.ofa_gamma, self.ofa_loss_weight):
                branch_logits = self.trainable.branches[f"stage{stage}"](student_features[stage])
                parts[f"ofa_stage{stage}"] = ofa_loss(
                    branch_logits, teacher_logits, target, gamma, self.ofa_temperature
                )
                weights[f"ofa_stage{stage}"] = weight
        return self._total(logits, parts, weights)

    def _teacher_logits(self, images: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.teacher(images)

    @staticmethod
    def _total(
        logits: torch.Tensor, parts: dict[str, torch.Tensor], weights: dict[str, float]
    ) -> dict[str, torch.Tensor]:
        total = sum(weights[name] * value for name, value in parts.items())
        return {"loss": total, "output": logits, **parts}


def _check_pair(student: nn.Module, teacher: nn.Module) -> None:
    if student is teacher:
        raise ModelMismatchError("the teacher and the student are the same module; create them separately")
    s_classes, t_classes = getattr(student, "num_classes", None), getattr(teacher, "num_classes", None)
    if s_classes != t_classes:
        raise ModelMismatchError(
            f"teacher {type(teacher).__name__} has {t_classes} classes, student {type(student).__name__} has "
            f"{s_classes}; create both with the same num_classes"
        )


def _stages_once(taps: StageTaps, stages: Sequence[int], name: str) -> list[int]:
    """``stages`` checked against the student (:meth:`StageTaps.check_stages`), in the order given, each once."""
    stages = list(stages)
    taps.check_stages(stages)
    repeated = sorted({stage for stage in stages if stages.count(stage) > 1})
    if repeated:
        raise ConfigError(
            f"{name} lists stage {repeated[0]} more than once ({stages}); list each stage once with --set {name}=[...]"
        )
    return stages


def _per_stage(value: float | Sequence[float], length: int, name: str, shape: str) -> list[float]:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [float(value)] * length
    values = [float(v) for v in value]
    if len(values) == 1:
        return values * length
    if len(values) != length:
        raise ConfigError(f"{name} has {len(values)} values; expected 1 or {length} ({shape})")
    return values
