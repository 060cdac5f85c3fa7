"""Prefix tokens decided per layer, layout overrides from strings, and refusals whose fix works.

Each case is checked against plain hooks and hand pooling written from the model's source.
"""

from __future__ import annotations

import pytest
import timm
import torch

from cka_probe.capture import FeatureRecorder, class_token_counts, parse_layouts
from cka_probe.errors import ConfigError, LayerSelectionError


def _record(model, x, **kwargs):
    with FeatureRecorder(model, **kwargs) as rec, torch.no_grad():
        model(x)
    return rec


def _images(size: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(seed))


# --------------------------------------------------------------------------- parse_layouts


def test_parse_layouts_keeps_order_and_checks_each_string():
    assert parse_layouts(["blocks.*.mlp.act=NLC", " stem.* = NCHW "]) == {"blocks.*.mlp.act": "NLC", "stem.*": "NCHW"}
    assert list(parse_layouts(["b=NCL", "a=NLC"])) == ["b", "a"]
    assert parse_layouts("x=NC") == {"x": "NC"} and parse_layouts(None) == {} and parse_layouts([]) == {}
    assert parse_layouts({"x": "NHWC"}) == {"x": "NHWC"}
    assert parse_layouts(["a=NLC", "a=NLC"]) == {"a": "NLC"}


@pytest.mark.parametrize(
    ("values", "error", "match"),
    [
        (["blocks.*.mlp.act"], ConfigError, r"^--layouts-a/-b 'blocks.\*.mlp.act' is not PATTERN=LAYOUT; write e.g."),
        (["=NLC"], ConfigError, "is not PATTERN=LAYOUT"),
        (["a="], ConfigError, "is not PATTERN=LAYOUT"),
        (["a=NLC", "a=NCL"], ConfigError, "gives a two layouts, NLC and NCL; give it one"),
        (["a=CHW"], LayerSelectionError, r"a=CHW: unknown layout 'CHW'; choose one of NC, NCL, NLC, NCHW, NHWC"),
        ({"a": "nlc"}, LayerSelectionError, "unknown layout 'nlc'"),
    ],
)
def test_parse_layouts_refuses_in_one_line(values, error, match):
    with pytest.raises(error, match=match) as info:
        parse_layouts(values)
    assert "\n" not in str(info.value)


def test_parse_layouts_names_the_option_it_came_from():
    with pytest.raises(ConfigError, match=r"^analysis.layouts_a 'x' is not PATTERN=LAYOUT"):
        parse_layouts(["x"], option="analysis.layouts_a")


# --------------------------------------------------------------------------- class tokens of the model


@pytest.mark.parametrize(
    ("name", "kwargs", "counts"),
    [
        ("test_vit", {}, (1,)),
        ("test_vit_relpos", {}, ()),
        ("deit_tiny_distilled_patch16_224", {"depth": 1}, (1, 2)),  # cls_token + dist_token, num_prefix_tokens = 2
        ("pit_ti_distilled_224", {}, (2,)),  # one (1, 2, C) parameter, no num_prefix_tokens
        ("crossvit_tiny_240", {}, (1,)),  # cls_token_0, cls_token_1
        ("coat_lite_tiny", {}, (1,)),  # cls_token1 .. cls_token4
        ("test_resnet", {}, ()),
    ],
)
def test_class_token_counts_from_structure(name, kwargs, counts):
    assert class_token_counts(timm.create_model(name, pretrained=False, **kwargs)) == counts


# --------------------------------------------------------------------------- prefix per layer


def test_convit_has_its_class_token_only_from_block_10():
    """convit.py: ``if i == self.local_up_to_layer: x = torch.cat((self.cls_token..., x), dim=1)``."""
    model = timm.create_model("convit_tiny", pretrained=False, img_size=64).eval()
    x = _images(64)
    raw = {}
    handles = [
        model.blocks[i].mlp.act.register_forward_hook(lambda m, a, out, i=i: raw.__setitem__(i, out.clone()))
        for i in range(len(model.blocks))
    ]
    rec = _record(model, x)
    for handle in handles:
        handle.remove()
    for i, out in raw.items():
        label = f"blocks.{i}.mlp.act"
        prefix = 1 if i >= model.local_up_to_layer else 0
        assert out.shape[1] == 16 + prefix  # a 4x4 patch grid at 64 px, patch 16
        assert rec.layouts[label].prefix_tokens == prefix
        torch.testing.assert_close(rec.features[label].double(), out[:, prefix:].double().mean(1), rtol=1e-5, atol=1e-6)
    with pytest.raises(
        LayerSelectionError, match=r"^layer blocks\.0\.mlp\.act has no class token .* --tokens patch or all$"
    ):
        _record(model, x, tokens="cls")
    late = _record(model, x, tokens="cls", layers="blocks.1[01].mlp.act")
    for label in late.layers:
        torch.testing.assert_close(late.features[label], raw[int(label.split(".")[1])][:, 0])


def test_cait_class_attention_mlp_sees_only_the_class_token():
    """cait.py: ``x_cls = x_cls + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x_cls)))`` on (B, 1, C)."""
    model = timm.create_model("cait_xxs24_224", pretrained=False, img_size=64, depth=2, depth_token_only=1).eval()
    x = _images(64)
    with pytest.warns(UserWarning, match="blocks_token_only.0.mlp.act: its 1 token"):
        default = _record(model, x)
    assert "blocks_token_only.0.mlp.act" in default.skipped
    assert all(default.layouts[label].prefix_tokens == 0 for label in default.layers)  # patch-only main blocks
    with pytest.raises(
        LayerSelectionError, match=r"^layer blocks_token_only\.0\.mlp\.act: .* class tokens only.*--tokens cls or all"
    ):
        _record(model, x, layers="blocks_token_only.*.mlp.act")
    # the suggested fix works: --tokens cls records the class token the layer sees
    raw = []
    handle = model.blocks_token_only[0].mlp.act.register_forward_hook(lambda m, a, out: raw.append(out.clone()))
    fixed = _record(model, x, layers="blocks_token_only.*.mlp.act", tokens="cls")
    handle.remove()
    torch.testing.assert_close(fixed.features["blocks_token_only.0.mlp.act"], raw[0][:, 0])


def test_pit_class_token_without_num_prefix_tokens():
    """pit.py: an unpadded conv embedding ((64 - 16) // 8 + 1 = 7 per side), then the class token(s) ahead."""
    model = timm.create_model("pit_ti_distilled_224", pretrained=False, img_size=64).eval()
    x = _images(64)
    raw = []
    handle = model.transformers[0].blocks[0].mlp.act.register_forward_hook(lambda m, a, out: raw.append(out.clone()))
    rec = _record(model, x)
    handle.remove()
    label = "transformers.0.blocks.0.mlp.act"
    assert raw[0].shape[1] == 2 + 7 * 7
    assert rec.layouts[label].prefix_tokens == 2
    torch.testing.assert_close(rec.features[label].double(), raw[0][:, 2:].double().mean(1), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(_record(model, x, tokens="cls", layers=label).features[label], raw[0][:, 0])


# --------------------------------------------------------------------------- structural answers and fixes


def test_pvt_v2_mlp_is_tokens_at_every_size():
    """pvt_v2.py MlpWithDepthwiseConv: fc1 -> (B, C, H, W) -> dwconv -> flatten(2).transpose(1, 2) -> act -> fc2."""
    model = timm.create_model("pvt_v2_b0", pretrained=False).eval()
    label = "stages.0.blocks.0.mlp.act"
    raw = []
    handle = model.get_submodule(label).register_forward_hook(lambda m, a, out: raw.append(out.clone()))
    rec = _record(model, _images(224), layers=label)
    assert raw[0].shape == (2, 56 * 56, 256)
    assert rec.layouts[label].layout == "NLC" and "flattened to tokens" in rec.layouts[label].source
    torch.testing.assert_close(rec.features[label].double(), raw[0].double().mean(1), rtol=1e-5, atol=1e-6)
    # at 64 px stage 1 has 16 x 16 = 256 tokens of 256 channels: the dwconv cannot tell, fc2 (which takes 256
    # features on the last axis) does
    raw.clear()
    small = _record(model, _images(64), layers=label)
    handle.remove()
    assert raw[0].shape == (2, 256, 256)
    assert small.layouts[label].layout == "NLC" and "feeds Linear" in small.layouts[label].source
    torch.testing.assert_close(small.features[label].double(), raw[0].double().mean(1), rtol=1e-5, atol=1e-6)


def test_nasnet_unpadded_maps_are_channels_first():
    """nasnet.py: a 3x3 stride-2 stem without padding gives 111 x 111 maps at 224 px; ActConvBn runs act first."""
    model = timm.create_model("nasnetalarge", pretrained=False, num_features=2016).eval()
    labels = ["cell_stem_0.conv_1x1.act", "cell_stem_0.comb_iter_0_right.act_1"]
    raw = {}
    handles = [
        model.get_submodule(n).register_forward_hook(lambda m, a, out, n=n: raw.__setitem__(n, out.clone()))
        for n in labels
    ]
    rec = _record(model, _images(224), layers=labels)
    for handle in handles:
        handle.remove()
    for label in labels:
        assert raw[label].shape[2:] == (111, 111)
        assert rec.layouts[label].layout == "NCHW"
        torch.testing.assert_close(rec.features[label].double(), raw[label].double().mean((2, 3)), rtol=1e-5, atol=1e-6)
