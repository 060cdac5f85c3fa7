"""OFA branches: small classifiers on a student's intermediate stages (Hao et al. 2023, sec. B.5, Table 9).

Each branch maps a stage's ``(B, C, H, W)`` feature map (as :class:`~cka_probe.ofa.taps.StageTaps`
returns it) to ``(B, num_classes)`` logits, which the OFA loss then matches to the teacher.

CNN students (Table 9, first half)
    stage ``s < 4``: ``4 - s`` downsampling blocks, each the official code's DARTS-style separable
    convolution (``SepConv`` of ``distillers/utils.py``): two timm ``SeparableConvNormAct`` in a row
    (depthwise 3x3, pointwise 1x1, BatchNorm, ReLU), the first with **stride 2** keeping the channels,
    the second with stride 1 to the block's output; the blocks double the channels each time except
    the last, which goes to ``max(d_s, d_t)``. Stage 4: a 1x1 convolution to ``max(d_s, d_t)``. Then
    global average pooling and a linear classifier. Table 9 writes one ``SeparableConvNormAct(in,
    out)`` per block with timm's default stride 1, which would not downsample; the official code's
    block is the double one above, and ours equals it weight for weight.

ViT / MLP students (Table 9, second half)
    ``merge_num = max(int(log2(grid / 7)), 0)`` Swin patch-merging steps, with ``grid`` the square
    root of the number of patch tokens, then ``max(4 - s, 1)`` timm ``Block`` s of width ``d_s`` with
    4 heads, a mean over tokens and a linear classifier. Adaptations to timm 1.0's
    ``timm.models.swin_transformer.PatchMerging(dim, out_dim, norm_layer)``, which takes NHWC input
    and has neither ``input_resolution`` nor ``act_layer``: the tokens are kept as an NHWC grid
    through the mergers, and Table 9's activation (GELU after every merger but the last of two or
    more, as in its pseudocode) is a separate module after each one. When no merge happens and the
    stage is narrower or wider than ``d_s`` (a Swin stage, or a grid already at or under 7 x 7 on
    small images), a linear layer maps it to ``d_s``, the width Table 9's blocks expect; Table 9 has
    no such case because its ViT/MLP stages are all ``d_s`` wide or merged. Prefix tokens (class,
    register) never reach a branch: ``forward_intermediates`` splits them off, and the branch pools
    the patch tokens (Table 9's ``x.mean(dim=1)``); the reference code instead re-attaches the class
    token after merging and classifies from it.

Initialisation follows the official code: truncated normal (std 0.02) and zero bias for linear layers,
He (fan-out) for convolution weights (their biases keep PyTorch's default), unit BatchNorm.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from .._choices import MODEL_KINDS
from ..errors import ArgumentError, ShapeError, StageError

__all__ = [
    "BRANCH_HEADS",
    "FINAL_PATCH_GRID",
    "build_branch",
    "cnn_branch",
    "init_weights",
    "merge_count",
    "sep_conv",
    "token_branch",
]

FINAL_PATCH_GRID = 7
"""Table 9: patch merging stops at a 7 x 7 grid (49 patches)."""

BRANCH_HEADS = 4
"""Table 9: the branch's transformer blocks have 4 heads."""


def build_branch(
    kind: str,
    stage: int,
    feature_shape: Sequence[int],
    student_width: int,
    teacher_width: int,
    num_classes: int,
) -> nn.Module:
    """The Table 9 branch of a student stage.

    Args:
        kind: ``"cnn"`` or ``"vit"`` (see :func:`~cka_probe.ofa.taps.model_kind`).
        stage: 1 to 4.
        feature_shape: ``(C, H, W)`` of the stage's features.
        student_width: ``d_s``, the student's pre-logit width.
        teacher_width: ``d_t``, the teacher's pre-logit width.
        num_classes: classes of the classifier.

    Returns:
        A module mapping ``(B, C, H, W)`` to ``(B, num_classes)``, initialised as the reference code.
    """
    if kind not in MODEL_KINDS:
        raise ArgumentError(
            f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)} (taps.model_kind of the student)"
        )
    if kind == "cnn":
        branch = cnn_branch(stage, feature_shape[0], max(student_width, teacher_width), num_classes)
    else:
        branch = token_branch(stage, feature_shape, student_width, num_classes)
    init_weights(branch)
    return branch


def cnn_branch(stage: int, in_chans: int, width: int, num_classes: int) -> nn.Sequential:
    """Table 9's CNN branch as the official code builds it: double separable convolutions that halve the
    resolution (or a 1x1 conv at stage 4), pool, linear.

    Args:
        stage: 1 to 4.
        in_chans: channels of the stage's features.
        width: ``max(d_s, d_t)``.
        num_classes: classes of the classifier.

    Example:
        >>> branch = cnn_branch(2, 16, 64, 10)
        >>> branch(torch.zeros(2, 16, 8, 8)).shape
        torch.Size([2, 10])
    """
    _check_stage(stage)
    if stage != 4:
        blocks: list[nn.Module] = []
        num_blocks = 4 - stage
        for i in range(num_blocks):
            out_chans = width if i == num_blocks - 1 else in_chans * 2
            blocks.append(sep_conv(in_chans, out_chans))
            in_chans *= 2
    else:
        blocks = [nn.Conv2d(in_chans, width, kernel_size=1, stride=1, padding=0)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def sep_conv(in_chans: int, out_chans: int) -> nn.Sequential:
    """The official branch's downsampling block (DARTS' ``SepConv``): two timm ``SeparableConvNormAct``.

    The first is depthwise 3x3 with stride 2, pointwise ``in -> in``, BatchNorm, ReLU; the second depthwise
    3x3 with stride 1, pointwise ``in -> out``, BatchNorm, ReLU. No convolution has a bias.

    Example:
        >>> sep_conv(8, 16)(torch.zeros(1, 8, 6, 6)).shape
        torch.Size([1, 16, 3, 3])
    """
    from timm.layers import SeparableConvNormAct

    return nn.Sequential(
        SeparableConvNormAct(in_chans, in_chans, kernel_size=3, stride=2),
        SeparableConvNormAct(in_chans, out_chans, kernel_size=3, stride=1),
    )


class _NCHWToNHWC(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(0, 2, 3, 1)


class _GridToTokens(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1, 2)


class _TokenMean(nn.Module):
    """Table 9's ``global_pool``: ``x.mean(dim=1)`` over tokens."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=1)


def merge_count(grid: int, final_grid: int = FINAL_PATCH_GRID) -> int:
    """Table 9's number of patch-merging steps: ``max(int(log2(grid / final_grid)), 0)``.

    Example:
        >>> [merge_count(g) for g in (56, 28, 16, 14, 8, 7, 4)]
        [3, 2, 1, 1, 0, 0, 0]
    """
    return max(int(math.log2(grid / final_grid)), 0)


def token_branch(stage: int, feature_shape: Sequence[int], width: int, num_classes: int) -> nn.Sequential:
    """Table 9's ViT/MLP branch: patch merging to about 7 x 7, transformer blocks, token mean, linear.

    Args:
        stage: 1 to 4.
        feature_shape: ``(embed_dim, H, W)`` of the stage's patch tokens as a map.
        width: ``d_s``, the student's pre-logit width.
        num_classes: classes of the classifier.

    Example:
        >>> branch = token_branch(1, (32, 16, 16), 64, 10)
        >>> branch(torch.zeros(2, 32, 16, 16)).shape
        torch.Size([2, 10])
    """
    from timm.models.swin_transformer import PatchMerging
    from timm.models.vision_transformer import Block

    _check_stage(stage)
    embed_dim, height, width_px = (int(v) for v in feature_shape)
    if width % BRANCH_HEADS:
        raise ShapeError(f"branch width {width} is not divisible by the {BRANCH_HEADS} heads of Table 9's blocks")
    grid = int((height * width_px) ** 0.5)
    num_merges = merge_count(grid)
    layers: list[nn.Module] = [_NCHWToNHWC()]
    in_dim = embed_dim
    for i in range(num_merges):
        layers.append(PatchMerging(dim=in_dim, out_dim=width))
        last_of_several = i != 0 and i == num_merges - 1
        layers.append(nn.Identity() if last_of_several else nn.GELU())
        in_dim = width
    layers.append(_GridToTokens())
    if in_dim != width:
        layers.append(nn.Linear(in_dim, width))
    blocks = [Block(dim=width, num_heads=BRANCH_HEADS) for _ in range(max(4 - stage, 1))]
    return nn.Sequential(*layers, *blocks, _TokenMean(), nn.Linear(width, num_classes))


def init_weights(module: nn.Module) -> None:
    """The official code's branch initialisation (applied to every submodule; a convolution's bias, where it
    has one, keeps PyTorch's default, as there)."""
    for sub in module.modules():
        if isinstance(sub, nn.Conv2d):
            nn.init.kaiming_normal_(sub.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(sub, nn.Linear):
            nn.init.trunc_normal_(sub.weight, std=0.02)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)
        elif isinstance(sub, (nn.LayerNorm, nn.BatchNorm2d, nn.GroupNorm)):
            if sub.weight is not None:
                nn.init.ones_(sub.weight)
            if sub.bias is not None:
                nn.init.zeros_(sub.bias)


def _check_stage(stage: int) -> None:
    if stage not in (1, 2, 3, 4):
        raise StageError(f"stage {stage!r} does not exist: stages are 1, 2, 3, 4")
