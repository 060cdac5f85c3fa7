"""Distillation losses on logits and features: One-for-All (OFA), Hinton's KD, FitNet's hint loss.

All three are pure functions of tensors. Teacher tensors are detached inside each function, so
no gradient ever reaches a teacher, whatever the caller passes.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import ArgumentError, ShapeError

__all__ = ["ofa_loss", "kd_loss", "hint_loss", "target_mask"]


def target_mask(target: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot mask of the target class, from class indices or from soft targets.

    Soft targets (mixup / cutmix / label smoothing, shape ``(B, K)``) are reduced to their arg-max
    class, as in the OFA reference implementation.

    Args:
        target: ``(B,)`` class indices or ``(B, K)`` soft targets.
        num_classes: K.

    Returns:
        ``(B, K)`` float tensor with a single one per row.

    Example:
        >>> target_mask(torch.tensor([2, 0]), 3)
        tensor([[0., 0., 1.],
                [1., 0., 0.]])
    """
    if target.ndim == 2:
        if target.shape[1] != num_classes:
            raise ShapeError(f"soft targets have {target.shape[1]} classes, the logits {num_classes}")
        target = target.argmax(dim=1)
    elif target.ndim != 1:
        raise ShapeError(f"targets must be (B,) class indices or (B, K) soft targets, got shape {tuple(target.shape)}")
    return F.one_hot(target.long(), num_classes).float()


def _tempered_log_probs(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """``log_softmax(z / T)`` of the student and of the (detached) teacher, in float32, after the checks."""
    _check_logits(student_logits, teacher_logits)
    if temperature <= 0:
        raise ArgumentError(
            f"temperature must be positive, got {temperature} (recipe keys kd_temperature, ofa_temperature)"
        )
    return (
        F.log_softmax(student_logits.float() / temperature, dim=-1),
        F.log_softmax(teacher_logits.detach().float() / temperature, dim=-1),
    )


def ofa_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    r"""One-for-All distillation loss with target-class enhancement (Hao et al., NeurIPS 2023, eq. 5).

    With :math:`p^s = \mathrm{softmax}(z^s / T)`, :math:`p^t = \mathrm{softmax}(z^t / T)` and
    :math:`y` the one-hot target::

        L_OFA = mean_batch( - sum_c [ (p^t_c + y_c)^gamma - y_c ] * log p^s_c )

    For ``gamma = 1`` the weight is :math:`p^t_c`, so the loss is the cross-entropy of the student
    against the teacher's soft labels; ``gamma > 1`` raises the weight of the target class only
    (its weight becomes :math:`(1 + p^t_y)^\gamma - 1 > p^t_y`), the other classes keep
    :math:`(p^t_c)^\gamma`.

    Choices, following the public reference code of the paper: the temperature divides both the
    student's and the teacher's logits, and there is no ``T**2`` factor (the reference uses
    ``T = 1``). ``log p^s`` is computed with :func:`torch.nn.functional.log_softmax`, never as
    ``log(softmax(.))``. Soft targets are reduced to their arg-max class (see :func:`target_mask`).

    Args:
        student_logits: ``(B, K)`` logits of the student or of one of its branches.
        teacher_logits: ``(B, K)`` teacher logits; detached here.
        target: ``(B,)`` class indices or ``(B, K)`` soft targets.
        gamma: target-enhancement exponent, ``>= 1`` in the paper.
        temperature: softmax temperature ``T > 0``.

    Returns:
        Scalar loss.

    Example:
        >>> z_s, z_t = torch.zeros(1, 2), torch.tensor([[0.0, 0.0]])
        >>> ofa_loss(z_s, z_t, torch.tensor([0]), gamma=1.0)  # soft CE against (0.5, 0.5)
        tensor(0.6931)
    """
    log_p_student, log_p_teacher = _tempered_log_probs(student_logits, teacher_logits, temperature)
    p_teacher = log_p_teacher.exp()
    mask = target_mask(target, student_logits.shape[-1]).to(p_teacher.device)
    weight = (p_teacher + mask).pow(gamma) - mask
    return -(weight * log_p_student).sum(dim=-1).mean()


def kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    r"""Hinton et al.'s knowledge-distillation loss (arXiv:1503.02531, sec. 2).

    ::

        L_KD = T^2 * mean_batch KL( softmax(z^t / T) || softmax(z^s / T) )

    The ``T**2`` factor keeps the gradient scale independent of ``T`` (Hinton et al., sec. 2).
    Both distributions are handled in log space (``log_softmax`` and ``kl_div(log_target=True)``).

    Args:
        student_logits: ``(B, K)``.
        teacher_logits: ``(B, K)``; detached here.
        temperature: ``T > 0``.

    Returns:
        Scalar loss.

    Example:
        >>> kd_loss(torch.zeros(2, 3), torch.zeros(2, 3))
        tensor(0.)
    """
    log_p_student, log_p_teacher = _tempered_log_probs(student_logits, teacher_logits, temperature)
    kl = F.kl_div(log_p_student, log_p_teacher, reduction="batchmean", log_target=True)
    return kl * temperature**2


def hint_loss(student_features: torch.Tensor, teacher_features: torch.Tensor) -> torch.Tensor:
    """FitNet's hint loss: mean squared error between aligned features (Romero et al., ICLR 2015, eq. 3).

    The student's features must already be mapped to the teacher's shape (see
    :class:`~cka_probe.ofa.fitnet.FitNetAdapter`). The mean is over every element, so the scale does
    not grow with the feature size.

    Args:
        student_features: aligned student features, any shape.
        teacher_features: teacher features of the same shape; detached here.

    Returns:
        Scalar loss.
    """
    if student_features.shape != teacher_features.shape:
        raise ShapeError(
            f"aligned student features {tuple(student_features.shape)} do not match the teacher's "
            f"{tuple(teacher_features.shape)}"
        )
    return F.mse_loss(student_features.float(), teacher_features.detach().float())


def _check_logits(student_logits: torch.Tensor, teacher_logits: torch.Tensor) -> None:
    if student_logits.ndim != 2 or student_logits.shape != teacher_logits.shape:
        raise ShapeError(
            f"student logits {tuple(student_logits.shape)} and teacher logits {tuple(teacher_logits.shape)} "
            "must both be (batch, classes)"
        )
