"""Stage taps return exactly what forward_intermediates returns, at the documented indices."""

from __future__ import annotations

import pytest
import torch

from cka_probe.errors import StageError
from cka_probe.ofa.taps import (
    FINAL,
    StageTaps,
    isotropic_blocks,
    model_kind,
    pre_logit_width,
)

ALL_KINDS = ["resnet", "convnext", "efficientnet", "vit", "test_vit", "mixer", "swin"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_taps_equal_forward_intermediates_and_logits_equal_forward(model_factory, images, kind):
    model = model_factory(kind).eval()
    taps = StageTaps(model, images.shape[1:])
    with torch.no_grad():
        logits, features = taps(images, [1, 2, 3, 4])
        indices = sorted({taps.indices[s] for s in (1, 2, 3, 4)} - {FINAL})
        reference = model.forward_intermediates(images, indices=indices, intermediates_only=True)
        by_index = dict(zip(indices, reference))
        by_index[FINAL] = model.forward_features(images)
        assert torch.allclose(logits, model(images), atol=1e-5)
    for stage in (1, 2, 3, 4):
        assert torch.equal(features[stage], by_index[taps.indices[stage]])
        assert tuple(features[stage].shape[1:]) == taps.shapes[stage]


def test_cnn_stages_are_the_four_resolution_stages(model_factory):
    model = model_factory("resnet")
    taps = StageTaps(model, (3, 32, 32))
    modules = [model.feature_info[taps.indices[s]]["module"] for s in (1, 2, 3, 4)]
    assert modules == [
        "layer1",
        "layer2",
        "layer3",
        "layer4",
    ]  # the stem (act1, stride 2) is not a stage
    assert [taps.shapes[s][1] for s in (1, 2, 3, 4)] == [8, 4, 2, 1]


def test_isotropic_stages_follow_the_official_rule_at_other_depths(model_factory):
    # depth 4 -> blocks 0, 1, 2, 3; test_vit has depth 6 -> round(6 * (1/6, 1/3, 5/6, 1)) - 1 = 0, 1, 4, 5
    assert StageTaps(model_factory("vit"), (3, 32, 32)).indices == {
        1: 0,
        2: 1,
        3: 2,
        4: 3,
    }
    assert StageTaps(model_factory("test_vit"), (3, 32, 32)).indices == {
        1: 0,
        2: 1,
        3: 4,
        4: 5,
    }
    # the table of the module docstring, and strictly deeper stages at every depth
    assert isotropic_blocks(24) == {1: 3, 2: 7, 3: 19, 4: 23}
    assert isotropic_blocks(8) == {1: 0, 2: 2, 3: 6, 4: 7}
    for depth in range(4, 40):
        blocks = list(isotropic_blocks(depth).values())
        assert blocks == sorted(set(blocks)) and blocks[-1] == depth - 1 and blocks[0] >= 0


def _twelve_block_students():
    import timm
    from timm.models.mlp_mixer import Affine, MlpMixer, ResBlock

    torch.manual_seed(0)
    small = {"num_classes": 10, "img_size": 32, "patch_size": 8, "embed_dim": 16}
    return {
        "deit": timm.create_model("deit_tiny_patch16_224", num_heads=2, **small),
        "mixer": MlpMixer(num_blocks=12, **small),
        "resmlp": MlpMixer(num_blocks=12, mlp_ratio=4, block_layer=ResBlock, norm_layer=Affine, **small),
    }


@pytest.mark.parametrize("kind", ["deit", "mixer", "resmlp"])
def test_isotropic_12_block_students_tap_the_official_blocks(kind, images):
    # Official OFA-KD (custom_forward/vision_transformer.py, mlp_mixer.py): blocks 1, 3, 9, 11 (0-based) of 12.
    # Reference: the output of each block, recorded with forward hooks on model.blocks[i].
    model = _twelve_block_students()[kind].eval()
    assert len(model.blocks) == 12
    taps = StageTaps(model, images.shape[1:])
    assert taps.indices == {1: 1, 2: 3, 3: 9, 4: 11}
    recorded = {}
    handles = [
        model.blocks[i].register_forward_hook(lambda m, a, out, i=i: recorded.__setitem__(i, out))
        for i in (1, 3, 9, 11)
    ]
    try:
        with torch.no_grad():
            _, features = taps(images, [1, 2, 3, 4])
    finally:
        for handle in handles:
            handle.remove()
    prefix = getattr(model, "num_prefix_tokens", 0)
    for stage, block in zip((1, 2, 3, 4), (1, 3, 9, 11)):
        tokens = recorded[block][:, prefix:]  # (B, 16 patches, C)
        expected = tokens.reshape(4, 4, 4, 16).permute(0, 3, 1, 2)
        assert torch.equal(features[stage], expected)


@pytest.mark.parametrize(
    ("name", "width"),
    [("mobilenetv2_050", 1280), ("efficientnet_b0", 1280), ("ghostnet_050", 480)],
)
def test_cnns_with_a_head_conv_tap_its_output_as_stage_4(name, width, images):
    # Official OFA-KD taps MobileNetV2's conv_head + bn2 output (1,280 channels), not the last block (160/320).
    # Reference: a forward hook on the module that ends the head conv in timm's source: bn2 (conv_head + BN + act),
    # or GhostNet's last block (a 1x1 ConvBnAct that timm's feature_info leaves out).
    import timm

    torch.manual_seed(0)
    model = timm.create_model(name, num_classes=10).eval()
    end = model.blocks[-1] if name.startswith("ghostnet") else model.bn2
    recorded = []
    handle = end.register_forward_hook(lambda m, a, out: recorded.append(out))
    try:
        taps = StageTaps(model, images.shape[1:])
        recorded.clear()
        with torch.no_grad():
            _, features = taps(images, [4])
    finally:
        handle.remove()
    assert taps.indices[4] == FINAL
    assert taps.shapes[4][0] == width
    assert torch.equal(features[4], recorded[-1])


def test_vit_prefix_tokens_are_split_off(model_factory, images):
    model = model_factory("vit")
    assert model.num_prefix_tokens == 1
    _, features = StageTaps(model, images.shape[1:])(images, [2])
    assert features[2].shape == (4, 32, 8, 8)  # 64 patch tokens, no class token


def test_kinds_and_widths(model_factory):
    assert [model_kind(model_factory(k)) for k in ALL_KINDS] == [
        "cnn",
        "cnn",
        "cnn",
        "vit",
        "vit",
        "vit",
        "vit",
    ]
    assert pre_logit_width(model_factory("resnet")) == 96
    assert pre_logit_width(model_factory("efficientnet")) == 256  # conv_head width, not the last stage's 64
    assert StageTaps(model_factory("efficientnet"), (3, 32, 32)).shapes[4][0] == 256  # stage 4 is the head conv
    assert pre_logit_width(model_factory("vit")) == 32


@pytest.mark.parametrize("bad", [0, 5, -1, "2", 2.0])
def test_unknown_stage_is_refused(model_factory, images, bad):
    taps = StageTaps(model_factory("resnet"), images.shape[1:])
    with pytest.raises(StageError, match=r"does not exist .* valid stages are \[1, 2, 3, 4\]"):
        taps(images, [bad])


def test_models_without_forward_intermediates_are_refused():
    with pytest.raises(StageError, match="forward_intermediates"):
        StageTaps(torch.nn.Linear(3, 3), (3, 8, 8))


def test_stage_rules_on_synthetic_shapes():
    from cka_probe.ofa.taps import _stage_indices

    # five intermediates at reductions 2, 4, 8, 16, 32 (a ResNet): the stem is skipped
    assert _stage_indices([(8, 16, 16), (8, 8, 8), (16, 4, 4), (32, 2, 2), (64, 1, 1)], [2, 4, 8, 16, 32]) == {
        1: 1, 2: 2, 3: 3, 4: 4,
    }  # fmt: skip
    # two intermediates per resolution: the deeper one is the stage
    assert _stage_indices([(8, 8, 8), (8, 8, 8), (16, 4, 4), (16, 4, 4), (32, 2, 2), (64, 1, 1)], None) == {
        1: 1, 2: 3, 3: 4, 4: 5,
    }  # fmt: skip
    # only three resolutions: stages 2 to 4, the last one always stage 4
    assert _stage_indices([(8, 8, 8), (16, 4, 4), (32, 2, 2)], [4, 8, 16]) == {
        2: 0,
        3: 1,
        4: 2,
    }
    with pytest.raises(StageError, match="at least 4 blocks"):
        _stage_indices([(8, 4, 4)] * 3, None)
