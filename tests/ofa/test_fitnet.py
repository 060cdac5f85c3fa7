"""FitNet alignment (sec. B.4): shapes for every pair of kinds, learned layers on the student side only."""

from __future__ import annotations

import pytest
import torch
from timm.layers import PatchEmbed
from timm.models.swin_transformer import PatchMerging

from cka_probe.ofa.fitnet import FitNetAdapter
from cka_probe.ofa.losses import hint_loss
from cka_probe.ofa.taps import StageTaps


@pytest.mark.parametrize(
    "student, teacher",
    [
        ("resnet", "vit"),
        ("vit", "resnet"),
        ("vit", "mixer"),
        ("mixer", "vit"),
        ("resnet", "convnext"),
        ("swin", "resnet"),
    ],
)
@pytest.mark.parametrize("stage", [1, 3])
def test_adapter_aligns_student_to_teacher(model_factory, images, student, teacher, stage):
    s_model, t_model = model_factory(student).eval(), model_factory(teacher).eval()
    s_taps, t_taps = StageTaps(s_model, images.shape[1:]), StageTaps(t_model, images.shape[1:])
    adapter = FitNetAdapter(s_taps.kind, t_taps.kind, s_taps.shapes[stage], t_taps.shapes[stage])
    _, fs = s_taps(images, [stage])
    _, ft = t_taps(images, [stage])
    aligned, reference = adapter(fs[stage], ft[stage])
    assert aligned.shape == reference.shape
    assert aligned.shape[-1] == t_taps.shapes[stage][0]
    assert torch.isfinite(hint_loss(aligned, reference))


def test_heterogeneous_steps_follow_b4():
    # CNN student (64 ch, 8x8) -> ViT teacher (32 ch, 2x2): patch embedding, two mergers, a linear layer
    adapter = FitNetAdapter("cnn", "vit", (64, 8, 8), (32, 2, 2))
    assert isinstance(adapter.patch_embed, PatchEmbed)
    assert len([m for m in adapter.mergers if isinstance(m, PatchMerging)]) == 2
    assert adapter.proj.in_features == 64 and adapter.proj.out_features == 32
    # ViT <-> MLP: no patch embedding, only merging and the linear layer
    token_pair = FitNetAdapter("vit", "vit", (48, 8, 8), (32, 4, 4))
    assert token_pair.patch_embed is None and len(token_pair.mergers) == 1


def test_teacher_side_is_never_learned():
    adapter = FitNetAdapter("vit", "cnn", (32, 8, 8), (48, 2, 2))
    teacher = torch.randn(2, 48, 2, 2, requires_grad=True)
    _, reference = adapter(torch.randn(2, 32, 8, 8), teacher)
    assert not reference.requires_grad
    assert torch.equal(reference, teacher.detach().flatten(2).transpose(1, 2))


def test_smaller_student_grid_pools_the_teacher():
    adapter = FitNetAdapter("cnn", "vit", (16, 2, 2), (32, 8, 8))
    aligned, reference = adapter(torch.randn(3, 16, 2, 2), torch.randn(3, 32, 8, 8))
    assert aligned.shape == reference.shape == (3, 4, 32)


def test_adapter_rejects_an_unknown_model_kind():
    from cka_probe.errors import ArgumentError

    with pytest.raises(ArgumentError, match="unknown model kind 'rnn'; use one of cnn, vit"):
        FitNetAdapter("cnn", "rnn", (8, 4, 4), (8, 4, 4))
