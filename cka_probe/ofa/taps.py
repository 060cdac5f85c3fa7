"""Stage taps: the features of a timm model at its stages 1 to 4, read through ``forward_intermediates``.

Nothing here patches a model's forward or hard-codes a shape: which intermediate is stage ``s`` is
decided once, from ``model.feature_info`` and a dry run of ``forward_intermediates`` on a blank
image of the training size.

* **Hierarchical models** (CNNs, Swin, ConvNeXt, ...): the intermediates are grouped by their
  reduction (``feature_info[i]['reduction']``, or the dry-run spatial size when ``feature_info``
  does not line up with the intermediates). Stage ``s`` is the deepest intermediate of the
  ``s``-th of the four coarsest resolutions: for a ResNet, ``layer1`` to ``layer4``; the stem
  (reduction 2) is not a stage.
* **CNNs with a head convolution** (MobileNetV2, EfficientNet, MnasNet, GhostNet, ReXNet, FBNet,
  MixNet, FastViT, ...: timm's ``forward_intermediates`` ends at the last block, and ``conv_head`` +
  ``bn2`` then widen it, e.g. 320 -> 1,280 channels): stage 4 is that head output (the ``final``
  tensor ``forward_intermediates`` returns, before pooling), as the official OFA-KD code taps it.
  The rule: when the final map has the last intermediate's resolution but another shape, it is stage 4.
* **Isotropic models** (ViT/DeiT, MLP-Mixer, ResMLP: every intermediate at one resolution): the
  official code taps blocks 1, 3, 9, 11 (0-based) of its 12-block students, i.e. the blocks ending
  1/6, 1/3, 5/6 and all of the depth. For ``L`` blocks, stage ``s`` taps block
  ``floor(L * f_s + 1/2) - 1`` with ``f = (1/6, 1/3, 5/6, 1)``, moved one block deeper where it would
  repeat the previous stage: 12 blocks -> 1, 3, 9, 11; 24 -> 3, 7, 19, 23; 6 -> 0, 1, 4, 5;
  4 -> 0, 1, 2, 3 (see :func:`isotropic_blocks`).

Intermediates come back as ``forward_intermediates`` gives them by default: ``(B, C, H, W)`` maps,
with a ViT's prefix (class / register) tokens split off and dropped.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import torch
from torch import nn

from .._choices import STAGES
from ..errors import StageError

__all__ = [
    "ISOTROPIC_FRACTIONS",
    "STAGES",
    "StageTaps",
    "isotropic_blocks",
    "model_kind",
    "pre_logit_width",
]

ISOTROPIC_FRACTIONS = (1 / 6, 1 / 3, 5 / 6, 1.0)
"""Depth fractions of the four stages of an isotropic model: blocks 1, 3, 9, 11 of 12 (official OFA-KD code)."""

FINAL = -1
"""Index standing for the ``final`` output of ``forward_intermediates`` (a CNN's head convolution)."""


def model_kind(model: nn.Module) -> str:
    """Whether a timm model is a CNN or a patch-token (ViT / MLP) model, as Table 9 splits students.

    A model whose stem is a :class:`timm.layers.PatchEmbed` (ViT, DeiT, Swin, MLP-Mixer, ResMLP, ...)
    is ``"vit"``; any other model is ``"cnn"``.

    Example:
        >>> import timm
        >>> model_kind(timm.create_model("test_vit", num_classes=10))
        'vit'
    """
    from timm.layers import PatchEmbed

    return "vit" if any(isinstance(module, PatchEmbed) for module in model.modules()) else "cnn"


def pre_logit_width(model: nn.Module) -> int:
    """Width of the features the classifier reads (``d_s`` / ``d_t`` of Table 9).

    timm's ``head_hidden_size`` where the model has a hidden pre-logits layer, else ``num_features``.
    """
    width = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    if not isinstance(width, int):
        raise StageError(f"{type(model).__name__} has no num_features; stage taps need a timm model")
    return width


def isotropic_blocks(depth: int) -> dict[int, int]:
    """Stage -> 0-based block index of an isotropic model with ``depth`` blocks.

    Block ``floor(depth * f_s + 1/2) - 1`` for ``f = (1/6, 1/3, 5/6, 1)`` (:data:`ISOTROPIC_FRACTIONS`),
    moved one block deeper where it would not be deeper than the previous stage's block. For the
    12-block students of the official OFA-KD code this gives its blocks 1, 3, 9, 11.

    Example:
        >>> isotropic_blocks(12), isotropic_blocks(4)
        ({1: 1, 2: 3, 3: 9, 4: 11}, {1: 0, 2: 1, 3: 2, 4: 3})
    """
    if depth < len(STAGES):
        raise StageError(f"an isotropic model with {depth} blocks has no four stages; it needs at least 4 blocks")
    blocks: dict[int, int] = {}
    previous = -1
    for stage, fraction in zip(STAGES, ISOTROPIC_FRACTIONS):
        block = max(math.floor(depth * fraction + 0.5) - 1, previous + 1)
        blocks[stage] = previous = block
    return blocks


class StageTaps:
    """Logits and stage features of a timm model in one forward pass.

    Args:
        model: a timm model with ``forward_intermediates`` and ``forward_head``.
        input_size: ``(C, H, W)`` of the images it will see; used for one dry run.

    Attributes:
        kind: ``"cnn"`` or ``"vit"`` (see :func:`model_kind`).
        indices: stage -> index into ``forward_intermediates``' outputs, or :data:`FINAL` (-1) for its
            ``final`` output (the head convolution of MobileNetV2-like CNNs).
        shapes: stage -> ``(C, H, W)`` of that stage's feature map at ``input_size``.

    Example:
        >>> import timm
        >>> taps = StageTaps(timm.create_model("test_resnet", num_classes=10), (3, 32, 32))
        >>> {stage: shape[0] for stage, shape in taps.shapes.items()}
        {1: 32, 2: 48, 3: 192, 4: 96}
    """

    def __init__(self, model: nn.Module, input_size: Sequence[int]) -> None:
        if not hasattr(model, "forward_intermediates") or not hasattr(model, "forward_head"):
            raise StageError(
                f"{type(model).__name__} has no forward_intermediates/forward_head; use a timm model that offers them"
            )
        self.model = model
        self.kind = model_kind(model)
        self.input_size = tuple(int(v) for v in input_size)
        shapes, reductions = self._dry_run()
        self.indices = _stage_indices([shapes[i] for i in range(len(shapes) - (FINAL in shapes))], reductions)
        if FINAL in shapes:
            self.indices[max(STAGES)] = FINAL
        self.shapes = {stage: shapes[index] for stage, index in self.indices.items()}

    def check_stages(self, stages: Iterable[int]) -> list[int]:
        """Return ``stages`` as a sorted list of ints, or raise :class:`StageError` naming the valid ones."""
        checked = []
        for stage in stages:
            if isinstance(stage, bool) or not isinstance(stage, int) or stage not in self.indices:
                raise StageError(
                    f"stage {stage!r} does not exist in {type(self.model).__name__}: valid stages are "
                    f"{sorted(self.indices)}"
                )
            checked.append(stage)
        return sorted(set(checked))

    def __call__(
        self, images: torch.Tensor, stages: Iterable[int], pre_logits: bool = False
    ) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run the model once; return its logits and ``{stage: (B, C, H, W) features}`` for ``stages``.

        With ``pre_logits`` the first value is the features the classifier reads (``forward_head(...,
        pre_logits=True)``, ``(B, pre_logit_width)``) instead of the logits.
        """
        stages = self.check_stages(stages)
        if not stages:
            if pre_logits:
                return self.model.forward_head(self.model.forward_features(images), pre_logits=True), {}
            return self.model(images), {}
        indices = sorted({self.indices[stage] for stage in stages} - {FINAL})
        if indices:
            final, intermediates = self.model.forward_intermediates(images, indices=indices)
        else:
            final, intermediates = self.model.forward_features(images), []
        by_index = dict(zip(indices, intermediates))
        by_index[FINAL] = final
        logits = self.model.forward_head(final, pre_logits=pre_logits)
        return logits, {stage: by_index[self.indices[stage]] for stage in stages}

    def _dry_run(self) -> tuple[dict[int, tuple[int, ...]], list[int] | None]:
        was_training = self.model.training
        try:
            parameter = next(self.model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            dtype = parameter.dtype if parameter is not None else torch.float32
            blank = torch.zeros((1, *self.input_size), device=device, dtype=dtype)
            self.model.eval()
            with torch.no_grad():
                final, intermediates = self.model.forward_intermediates(blank)
        finally:
            self.model.train(was_training)
        shapes = [tuple(t.shape[1:]) for t in intermediates]
        final_shape = tuple(final.shape[1:])
        if any(len(shape) != 3 for shape in shapes):
            raise StageError(
                f"{type(self.model).__name__}.forward_intermediates returned shapes {shapes}; stage taps need "
                "(B, C, H, W) maps"
            )
        info = getattr(self.model, "feature_info", None)
        reductions = None
        if info is not None and len(info) == len(shapes):
            entries = list(info)
            if all(
                isinstance(e, dict) and "reduction" in e and e.get("num_chs") == s[0] for e, s in zip(entries, shapes)
            ):
                reductions = [int(e["reduction"]) for e in entries]
        by_index = dict(enumerate(shapes))
        if self.kind == "cnn" and _is_head_conv_output(final_shape, shapes[-1]):
            by_index[FINAL] = final_shape
        return by_index, reductions


def _is_head_conv_output(final_shape: tuple[int, ...], last_shape: tuple[int, ...]) -> bool:
    """A ``final`` map at the last intermediate's resolution but of another shape: a head conv ran between them."""
    return len(final_shape) == 3 and final_shape[1:] == last_shape[1:] and final_shape != last_shape


def _stage_indices(shapes: list[tuple[int, ...]], reductions: list[int] | None) -> dict[int, int]:
    """Stage -> intermediate index, from the reductions (or spatial sizes) of all intermediates."""
    keys = reductions if reductions is not None else [(-s[1], -s[2]) for s in shapes]
    if len(set(keys)) == 1:
        return isotropic_blocks(len(shapes))
    # Deepest intermediate of each resolution, in order of depth.
    last_of_group: dict[object, int] = {}
    for index, key in enumerate(keys):
        last_of_group[key] = index
    ordered = sorted(last_of_group.values())
    coarsest = ordered[-len(STAGES) :]
    first_stage = len(STAGES) - len(coarsest) + 1
    return {first_stage + offset: index for offset, index in enumerate(coarsest)}
