"""Stage taps: the features of a timm model at its stages 1 to 4, read through ``forward_intermediates``.

Nothing here patches a model's forward or hard-codes a shape: which intermediate is stage ``s`` is
decided once, from ``model.feature_info`` and a dry run of ``forward_intermediates`` on a blank
image of the training size.

* **Hierarchical models** (CNNs, Swin, ConvNeXt, ...): the intermediates are grouped by their
  reduction (``feature_info[i]['reduction']``, or the dry-run spatial size when ``feature_info``
  does not line up with the intermediates). Stage ``s`` is the deepest intermediate of the
  ``s``-th of the four coarsest resolutions: for a ResNet, ``layer1`` to ``layer4``; the stem
  (reduction 2) is not a stage.
* **Isotropic models** (ViT, MLP-Mixer: every intermediate at one resolution): of ``L`` blocks,
  stage ``s`` taps block ``L * s // 4 - 1`` (0-based), i.e. blocks 2, 5, 8, 11 of a 12-block ViT,
  the last block being stage 4.

Intermediates come back as ``forward_intermediates`` gives them by default: ``(B, C, H, W)`` maps,
with a ViT's prefix (class / register) tokens split off and dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

from ..errors import StageError

__all__ = ["STAGES", "StageTaps", "model_kind", "pre_logit_width"]

STAGES = (1, 2, 3, 4)
"""The stage numbers of the paper (Table 9): four per model, 1 the shallowest."""

MODEL_KINDS = ("cnn", "vit")
"""``"cnn"`` for convolutional students; ``"vit"`` for patch-token models, ViT and MLP alike (Table 9)."""


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


class StageTaps:
    """Logits and stage features of a timm model in one forward pass.

    Args:
        model: a timm model with ``forward_intermediates`` and ``forward_head``.
        input_size: ``(C, H, W)`` of the images it will see; used for one dry run.

    Attributes:
        kind: ``"cnn"`` or ``"vit"`` (see :func:`model_kind`).
        indices: stage -> index into ``forward_intermediates``' outputs.
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
        self.indices = _stage_indices(shapes, reductions)
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

    def __call__(self, images: torch.Tensor, stages: Iterable[int]) -> tuple[torch.Tensor, dict[int, torch.Tensor]]:
        """Run the model once; return its logits and ``{stage: (B, C, H, W) features}`` for ``stages``."""
        stages = self.check_stages(stages)
        if not stages:
            return self.model(images), {}
        indices = sorted({self.indices[stage] for stage in stages})
        final, intermediates = self.model.forward_intermediates(images, indices=indices)
        by_index = dict(zip(indices, intermediates))
        logits = self.model.forward_head(final)
        return logits, {stage: by_index[self.indices[stage]] for stage in stages}

    def _dry_run(self) -> tuple[list[tuple[int, ...]], list[int] | None]:
        was_training = self.model.training
        try:
            parameter = next(self.model.parameters(), None)
            device = parameter.device if parameter is not None else torch.device("cpu")
            dtype = parameter.dtype if parameter is not None else torch.float32
            blank = torch.zeros((1, *self.input_size), device=device, dtype=dtype)
            self.model.eval()
            with torch.no_grad():
                intermediates = self.model.forward_intermediates(blank, intermediates_only=True)
        finally:
            self.model.train(was_training)
        shapes = [tuple(t.shape[1:]) for t in intermediates]
        if any(len(shape) != 3 for shape in shapes):
            raise StageError(
                f"{type(self.model).__name__}.forward_intermediates returned shapes {shapes}; stage taps need "
                "(B, C, H, W) maps"
            )
        info = getattr(self.model, "feature_info", None)
        reductions = None
        if info is not None and len(info) == len(shapes):
            entries = list(info)
            if all(isinstance(e, dict) and "reduction" in e and e.get("num_chs") == s[0] for e, s in zip(entries, shapes)):
                reductions = [int(e["reduction"]) for e in entries]
        return shapes, reductions


def _stage_indices(shapes: list[tuple[int, ...]], reductions: list[int] | None) -> dict[int, int]:
    """Stage -> intermediate index, from the reductions (or spatial sizes) of all intermediates."""
    keys = reductions if reductions is not None else [(-s[1], -s[2]) for s in shapes]
    if len(set(keys)) == 1:
        depth = len(shapes)
        if depth < len(STAGES):
            raise StageError(f"an isotropic model with {depth} blocks has no four stages; it needs at least 4 blocks")
        return {stage: depth * stage // 4 - 1 for stage in STAGES}
    # Deepest intermediate of each resolution, in order of depth.
    last_of_group: dict[object, int] = {}
    for index, key in enumerate(keys):
        last_of_group[key] = index
    ordered = sorted(last_of_group.values())
    coarsest = ordered[-len(STAGES) :]
    first_stage = len(STAGES) - len(coarsest) + 1
    return {first_stage + offset: index for offset, index in enumerate(coarsest)}
