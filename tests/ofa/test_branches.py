"""Table 9 branches: output shapes, widths, block counts, for CNN, ViT, Mixer and Swin students; the CNN branches
against the official code's, weight for weight."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import SeparableConvNormAct
from timm.models.swin_transformer import PatchMerging
from timm.models.vision_transformer import Block
from torch import nn

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
    layers = _layers(branch, SeparableConvNormAct)
    assert len(layers) == 2 * expected_blocks  # each block: two separable convolutions (DARTS' SepConv)
    assert [b.conv_dw.stride for b in layers] == [(2, 2), (1, 1)] * expected_blocks
    # the first keeps the channels, the second doubles them; the last block goes to max(d_s, d_t)
    outs = [b.conv_pw.out_channels for b in layers]
    assert outs[1::2] == [8 * 2 ** (i + 1) for i in range(expected_blocks - 1)] + [100]
    assert outs[0::2] == [8 * 2**i for i in range(expected_blocks)]
    x = torch.randn(2, 8, 16, 16)
    feature_map = branch[:expected_blocks](x)
    assert feature_map.shape == (2, 100, 16 // 2**expected_blocks, 16 // 2**expected_blocks)


class OfficialSepConv(nn.Module):
    """Reference: ``SepConv`` of the official OFA-KD code (``distillers/utils.py``), written from its structure."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.op = nn.Sequential(
            nn.Conv2d(c_in, c_in, 3, stride=2, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_in, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_in),
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, 3, stride=1, padding=1, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, padding=0, bias=False),
            nn.BatchNorm2d(c_out),
            nn.ReLU(inplace=False),
        )

    def forward(self, x):
        return self.op(x)


def official_cnn_branch(stage: int, in_chans: int, d_s: int, d_t: int, num_classes: int) -> nn.Sequential:
    """Reference: the CNN projector of the official ``distillers/ofa.py`` (``OFA.__init__``), from its structure."""
    width = max(d_s, d_t)
    if stage != 4:
        blocks = []
        for i in range(4 - stage):
            out_chans = width if i == 4 - stage - 1 else in_chans * 2
            blocks.append(OfficialSepConv(in_chans, out_chans))
            in_chans *= 2
    else:
        blocks = [nn.Conv2d(in_chans, width, 1, 1, 0)]
    return nn.Sequential(*blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))


def _randomised(module: nn.Module, seed: int) -> nn.Module:
    """Every parameter and BatchNorm statistic drawn at random, so that a misplaced tensor shows."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*module.parameters(), *(b for b in module.buffers() if b.dtype.is_floating_point)]:
            tensor.copy_(torch.rand(tensor.shape, generator=generator) * 0.2 + 0.05)
    return module


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


# The official code's stage shapes (custom_forward/resnet.py, efficientnet.py stage_info at 224 x 224).
OFFICIAL_STAGE_CHANNELS = {"resnet18": (64, 128, 256, 512), "mobilenetv2_100": (24, 32, 96, 1280)}


@pytest.mark.parametrize("student", ["resnet18", "mobilenetv2_100"])
def test_cnn_branches_equal_the_official_ones_weight_for_weight(student):
    model = timm.create_model(student, pretrained=False, num_classes=10).eval()
    taps = StageTaps(model, (3, 64, 64))
    d_s, d_t = pre_logit_width(model), 512  # a teacher no wider than the student's 512 / 1,280
    images = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        _, features = taps(images, [1, 2, 3, 4])
    for stage in (1, 2, 3, 4):
        in_chans = taps.shapes[stage][0]
        assert in_chans == OFFICIAL_STAGE_CHANNELS[student][stage - 1]
        ours = build_branch("cnn", stage, taps.shapes[stage], d_s, d_t, num_classes=10)
        reference = _randomised(official_cnn_branch(stage, in_chans, d_s, d_t, 10), seed=stage)
        assert _count(ours) == _count(reference)
        ours_state, reference_state = ours.state_dict(), reference.state_dict()
        assert len(ours_state) == len(reference_state)
        copied = {}
        for (name, value), (ref_name, ref_value) in zip(ours_state.items(), reference_state.items()):
            assert value.shape == ref_value.shape, (name, ref_name)
            copied[name] = ref_value
        ours.load_state_dict(copied)
        for mode in (False, True):  # running statistics, then batch statistics
            ours.train(mode), reference.train(mode)
            with torch.no_grad():
                torch.testing.assert_close(ours(features[stage]), reference(features[stage]), rtol=1e-5, atol=1e-6)


def test_resnet18_branch_parameter_counts_are_the_official_codes():
    # issue 19: with 10 classes the official branches of ResNet-18 (512 wide) have 274k / 260k / 208k parameters
    counts = [_count(cnn_branch(stage, chans, 512, 10)) for stage, chans in ((1, 64), (2, 128), (3, 256))]
    official = [
        _count(official_cnn_branch(stage, chans, 512, 512, 10)) for stage, chans in ((1, 64), (2, 128), (3, 256))
    ]
    assert counts == official == [273_930, 260_106, 207_882]


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
