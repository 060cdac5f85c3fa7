"""Table 9 branches: output shapes, widths, block counts, for CNN, ViT, Mixer and Swin students."""

from __future__ import annotations

import pytest
import torch
from timm.layers import SeparableConvNormAct
from timm.models.swin_transformer import PatchMerging
from timm.models.vision_transformer import Block

from cka_probe.errors import StageError
from cka_probe.ofa.branches import build_branch, cnn_branch, merge_count, token_branch
from cka_probe.ofa.taps import StageTaps, pre_logit_width


def _layers(branch, cls):
    return [m for m in branch.modules() if isinstance(m, cls)]


@pytest.mark.parametrize("student", ["resnet", "efficientnet", "convnext", "vit", "mixer", "swin"])
@pytest.mark.parametrize("stage", [1, 2, 3, 4])
def test_branch_maps_each_stage_to_logits(model_factory, images, student, stage):
    model = model_factory(student, num_classes=7).eval()
    taps = StageTaps(model, images.shape[1:])
    _, features = taps(images, [stage])
    d_s = pre_logit_width(model)
    branch = build_branch(taps.kind, stage, taps.shapes[stage], d_s, 80, num_classes=7)
    out = branch(features[stage])
    assert out.shape == (4, 7)
    classifier = list(branch.children())[-1]
    assert isinstance(classifier, torch.nn.Linear) and classifier.out_features == 7
    if taps.kind == "cnn":
        assert classifier.in_features == max(d_s, 80)
    else:
        assert classifier.in_features == d_s


@pytest.mark.parametrize("stage, expected_blocks", [(1, 3), (2, 2), (3, 1)])
def test_cnn_branch_downsamples_with_stride_two(stage, expected_blocks):
    branch = cnn_branch(stage, in_chans=8, width=100, num_classes=5)
    blocks = _layers(branch, SeparableConvNormAct)
    assert len(blocks) == expected_blocks
    assert all(b.conv_dw.stride == (2, 2) for b in blocks)
    # channels double each block, the last goes to max(d_s, d_t)
    outs = [b.conv_pw.out_channels for b in blocks]
    assert outs == [8 * 2 ** (i + 1) for i in range(expected_blocks - 1)] + [100]
    x = torch.randn(2, 8, 16, 16)
    feature_map = branch[:expected_blocks](x)
    assert feature_map.shape == (2, 100, 16 // 2**expected_blocks, 16 // 2**expected_blocks)


def test_cnn_branch_stage_four_is_a_pointwise_conv():
    branch = cnn_branch(4, in_chans=8, width=100, num_classes=5)
    conv = branch[0]
    assert isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1) and conv.out_channels == 100
    assert not _layers(branch, SeparableConvNormAct)


@pytest.mark.parametrize("stage, blocks", [(1, 3), (2, 2), (3, 1), (4, 1)])
def test_token_branch_has_max_4_minus_stage_blocks_with_4_heads(stage, blocks):
    branch = token_branch(stage, (32, 8, 8), width=64, num_classes=5)
    found = _layers(branch, Block)
    assert len(found) == blocks
    assert all(b.attn.num_heads == 4 for b in found)


@pytest.mark.parametrize("grid, merges", [(56, 3), (28, 2), (14, 1), (8, 0), (7, 0), (4, 0)])
def test_token_branch_merges_down_to_seven(grid, merges):
    assert merge_count(grid) == merges
    branch = token_branch(1, (16, grid, grid), width=32, num_classes=3)
    mergers = _layers(branch, PatchMerging)
    assert len(mergers) == merges
    if merges:
        assert mergers[0].dim == 16 and all(m.out_dim == 32 for m in mergers)
        activations = [type(m).__name__ for m in branch if type(m).__name__ in ("GELU", "Identity")]
        expected = ["GELU"] * merges if merges == 1 else ["GELU"] * (merges - 1) + ["Identity"]
        assert activations == expected
    x = torch.randn(2, 16, grid, grid)
    assert branch(x).shape == (2, 3)
    tokens = branch[: len(branch) - 2 - len(_layers(branch, Block))](x)  # up to the blocks
    final_grid = grid
    for _ in range(merges):
        final_grid = (final_grid + 1) // 2
    assert tokens.shape == (2, final_grid * final_grid, 32)


def test_token_branch_projects_an_unmerged_narrow_stage_to_d_s():
    # a Swin stage on a small image: grid already below 7, width 16 != d_s = 128
    branch = token_branch(1, (16, 4, 4), width=128, num_classes=3)
    linears = [m for m in branch if isinstance(m, torch.nn.Linear)]
    assert linears[0].in_features == 16 and linears[0].out_features == 128
    assert branch(torch.randn(2, 16, 4, 4)).shape == (2, 3)


def test_branch_rejects_bad_stage_and_width():
    with pytest.raises(StageError, match="stages are 1, 2, 3, 4"):
        cnn_branch(5, 8, 16, 3)
    with pytest.raises(ValueError, match="divisible by the 4 heads"):
        token_branch(1, (8, 8, 8), width=30, num_classes=3)


def test_branch_rejects_an_unknown_model_kind():
    from cka_probe.errors import ArgumentError

    with pytest.raises(ArgumentError, match="unknown model kind 'rnn'; use one of cnn, vit"):
        build_branch("rnn", 1, (8, 8, 8), 16, 16, 3)
