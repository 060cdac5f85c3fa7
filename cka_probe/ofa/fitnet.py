"""FitNet feature alignment for homogeneous and heterogeneous pairs (Hao et al. 2023, sec. B.4).

B.4 adapts FitNet (Romero et al., ICLR 2015) to pairs of different architectures in three steps:
(1) project CNN features into an embedding space with a patch embedding, (2) align the number of
patches with Swin's patch merging, (3) align the embedding width with a linear layer; between a
ViT and an MLP only steps 2 and 3 are needed. :class:`FitNetAdapter` does this on the student's
side of one stage:

* CNN student: timm ``PatchEmbed`` with patch size 1 (a learned per-position projection of the
  feature map into tokens of the student's width; the stage has already been downsampled).
* Patch merging: timm's Swin ``PatchMerging`` (width kept) while both sides of the student's grid
  are at least twice the teacher's. If the grids still differ (not a power-of-two ratio, or a
  student grid smaller than the teacher's), the larger side is average-pooled to the smaller grid.
* A linear layer to the teacher's width.
* CNN student and CNN teacher (not covered by B.4): FitNet's own regressor, a 1x1 convolution to
  the teacher's channels, with the same average pooling when the spatial sizes differ.

Only the student's side is learned. The teacher's features are read as they are (one token per
position of its ``(C, H, W)`` map, prefix tokens dropped), pooled when needed, never passed through
learned layers: a learned projection on the teacher's side would let both sides shrink towards a
constant and drive the MSE to zero without teaching anything.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .._choices import MODEL_KINDS
from ..errors import ArgumentError
from .branches import init_weights

__all__ = ["FitNetAdapter"]


class FitNetAdapter(nn.Module):
    """Maps one student stage onto the matching teacher stage, for :func:`~cka_probe.ofa.losses.hint_loss`.

    Args:
        student_kind: ``"cnn"`` or ``"vit"``.
        teacher_kind: ``"cnn"`` or ``"vit"``.
        student_shape: ``(C, H, W)`` of the student's stage features.
        teacher_shape: ``(C, H, W)`` of the teacher's stage features.

    Example:
        >>> adapter = FitNetAdapter("vit", "cnn", (32, 8, 8), (48, 2, 2))
        >>> student, teacher = adapter(torch.zeros(2, 32, 8, 8), torch.zeros(2, 48, 2, 2))
        >>> student.shape, teacher.shape
        (torch.Size([2, 4, 48]), torch.Size([2, 4, 48]))
    """

    def __init__(
        self,
        student_kind: str,
        teacher_kind: str,
        student_shape: Sequence[int],
        teacher_shape: Sequence[int],
    ) -> None:
        super().__init__()
        for kind in (student_kind, teacher_kind):
            if kind not in MODEL_KINDS:
                raise ArgumentError(
                    f"unknown model kind {kind!r}; use one of {', '.join(MODEL_KINDS)} (taps.model_kind of each model)"
                )
        from timm.layers import PatchEmbed
        from timm.models.swin_transformer import PatchMerging

        s_chans, s_height, s_width = (int(v) for v in student_shape)
        t_chans, t_height, t_width = (int(v) for v in teacher_shape)
        self.homogeneous_cnn = student_kind == "cnn" and teacher_kind == "cnn"
        self.target_grid = (min(s_height, t_height), min(s_width, t_width))
        if self.homogeneous_cnn:
            self.regressor = nn.Conv2d(s_chans, t_chans, kernel_size=1, bias=False)
        else:
            if student_kind == "cnn":
                self.patch_embed = PatchEmbed(
                    img_size=None, patch_size=1, in_chans=s_chans, embed_dim=s_chans, output_fmt="NHWC"
                )
            else:
                self.patch_embed = None
            mergers = []
            height, width = s_height, s_width
            while height // 2 >= t_height and width // 2 >= t_width:
                mergers.append(PatchMerging(dim=s_chans, out_dim=s_chans))
                height, width = (height + 1) // 2, (width + 1) // 2
            self.mergers = nn.Sequential(*mergers)
            self.target_grid = (min(height, t_height), min(width, t_width))
            self.proj = nn.Linear(s_chans, t_chans)
        init_weights(self)

    def forward(
        self, student_features: torch.Tensor, teacher_features: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Align a ``(B, C_s, H_s, W_s)`` student map with a ``(B, C_t, H_t, W_t)`` teacher map.

        Returns:
            ``(student_tokens, teacher_tokens)``, both ``(B, N, C_t)`` with ``N`` the common grid size.
        """
        with torch.no_grad():
            teacher = _pool_to(teacher_features.detach(), self.target_grid).flatten(2).transpose(1, 2)
        if self.homogeneous_cnn:
            student = _pool_to(self.regressor(student_features), self.target_grid)
            return student.flatten(2).transpose(1, 2), teacher
        if self.patch_embed is not None:
            grid = self.patch_embed(student_features)  # NHWC
        else:
            grid = student_features.permute(0, 2, 3, 1)
        grid = self.mergers(grid)
        grid = _pool_to(grid.permute(0, 3, 1, 2), self.target_grid).permute(0, 2, 3, 1)
        return self.proj(grid.flatten(1, 2)), teacher


def _pool_to(features: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Average-pool a ``(B, C, H, W)`` map to ``grid`` when it is not already that size."""
    if tuple(features.shape[-2:]) == tuple(grid):
        return features
    return F.adaptive_avg_pool2d(features, grid)
