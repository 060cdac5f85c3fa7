"""Stage taps return exactly what forward_intermediates returns, at the documented indices."""

from __future__ import annotations

import pytest
import torch

from cka_probe.errors import StageError
from cka_probe.ofa.taps import StageTaps, model_kind, pre_logit_width

ALL_KINDS = ["resnet", "convnext", "efficientnet", "vit", "test_vit", "mixer", "swin"]


@pytest.mark.parametrize("kind", ALL_KINDS)
def test_taps_equal_forward_intermediates_and_logits_equal_forward(model_factory, images, kind):
    model = model_factory(kind).eval()
    taps = StageTaps(model, images.shape[1:])
    with torch.no_grad():
        logits, features = taps(images, [1, 2, 3, 4])
        indices = [taps.indices[s] for s in (1, 2, 3, 4)]
        reference = model.forward_intermediates(images, indices=sorted(set(indices)), intermediates_only=True)
        by_index = dict(zip(sorted(set(indices)), reference))
        assert torch.allclose(logits, model(images), atol=1e-5)
    for stage in (1, 2, 3, 4):
        assert torch.equal(features[stage], by_index[taps.indices[stage]])
        assert tuple(features[stage].shape[1:]) == taps.shapes[stage]


def test_cnn_stages_are_the_four_resolution_stages(model_factory):
    model = model_factory("resnet")
    taps = StageTaps(model, (3, 32, 32))
    modules = [model.feature_info[taps.indices[s]]["module"] for s in (1, 2, 3, 4)]
    assert modules == ["layer1", "layer2", "layer3", "layer4"]  # the stem (act1, stride 2) is not a stage
    assert [taps.shapes[s][1] for s in (1, 2, 3, 4)] == [8, 4, 2, 1]


def test_isotropic_stages_are_evenly_spaced_blocks(model_factory):
    # depth 4 -> blocks 0, 1, 2, 3; test_vit has depth 6 -> 6*s//4 - 1 = 0, 2, 3, 5
    assert StageTaps(model_factory("vit"), (3, 32, 32)).indices == {1: 0, 2: 1, 3: 2, 4: 3}
    assert StageTaps(model_factory("test_vit"), (3, 32, 32)).indices == {1: 0, 2: 2, 3: 3, 4: 5}


def test_vit_prefix_tokens_are_split_off(model_factory, images):
    model = model_factory("vit")
    assert model.num_prefix_tokens == 1
    _, features = StageTaps(model, images.shape[1:])(images, [2])
    assert features[2].shape == (4, 32, 8, 8)  # 64 patch tokens, no class token


def test_kinds_and_widths(model_factory):
    assert [model_kind(model_factory(k)) for k in ALL_KINDS] == ["cnn", "cnn", "cnn", "vit", "vit", "vit", "vit"]
    assert pre_logit_width(model_factory("resnet")) == 96
    assert pre_logit_width(model_factory("efficientnet")) == 256  # conv_head width, not the last stage's 64
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
    assert _stage_indices([(8, 8, 8), (16, 4, 4), (32, 2, 2)], [4, 8, 16]) == {2: 0, 3: 1, 4: 2}
    with pytest.raises(StageError, match="at least 4 blocks"):
        _stage_indices([(8, 4, 4)] * 3, None)
