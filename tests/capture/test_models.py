"""Capture on timm's test models and on real architectures (random weights, small inputs).

Each layer's features are compared with the same outputs recorded by a plain hook and pooled by
hand with the layout the architecture is known to use.
"""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import activations as timm_act
from torch import nn

from cka_probe import FeatureRecorder, describe_layers


def _layout_by_family(patterns: dict[str, tuple[str, int]], default: tuple[str, int]):
    def expected(name: str) -> tuple[str, int]:
        return next((value for key, value in patterns.items() if key in name), default)

    return expected


NCHW, NHWC = ("NCHW", 0), ("NHWC", 0)

TEST_MODELS = {
    "test_byobnet": _layout_by_family({}, NCHW),
    "test_coatnet": _layout_by_family({}, NCHW),
    "test_convnext": _layout_by_family({}, NHWC),
    "test_convnext2": _layout_by_family({}, NHWC),
    "test_convnext3": _layout_by_family({}, NHWC),
    "test_efficientnet": _layout_by_family({}, NCHW),
    "test_efficientnet_evos": _layout_by_family({}, NCHW),
    "test_efficientnet_gn": _layout_by_family({}, NCHW),
    "test_efficientnet_ln": _layout_by_family({}, NCHW),
    "test_mambaout": _layout_by_family({"stem.": NCHW, "head.": ("NC", 0)}, NHWC),
    "test_maxvit": _layout_by_family({".mlp.": NHWC}, NCHW),
    "test_nfnet": _layout_by_family({}, NCHW),
    "test_resnet": _layout_by_family({}, NCHW),
    "test_vit": _layout_by_family({}, ("NLC", 1)),
    "test_vit2": _layout_by_family({}, ("NLC", 1)),
    "test_vit3": _layout_by_family({"attn_pool.": ("NLC", 0)}, ("NLC", 1)),
    "test_vit4": _layout_by_family({}, ("NLC", 1)),
    "test_vit_relpos": _layout_by_family({}, ("NLC", 0)),
}


def _capture_and_compare(model, x, expected, raw_outputs, hand_pool, **recorder_kwargs):
    rec = FeatureRecorder(model, **recorder_kwargs)
    raw = raw_outputs(model, rec.module_names)
    with rec, torch.no_grad():
        model(x)
    assert rec.layers, "nothing recorded"
    for label in rec.layers:
        name, _, call = label.partition("#")
        layout, prefix = expected(label)
        decided = rec.layouts[label]
        assert (label, decided.layout, decided.prefix_tokens) == (label, layout, prefix)
        reference = hand_pool(raw[name][int(call or 1) - 1], layout, prefix)
        torch.testing.assert_close(rec.features[label], reference.float(), rtol=1e-5, atol=1e-5)
    return rec


def test_every_timm_test_model_is_covered():
    assert set(TEST_MODELS) >= set(timm.list_models("test_*"))


@pytest.mark.parametrize("name", sorted(TEST_MODELS))
def test_timm_test_models(name, raw_outputs, hand_pool):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False).eval()
    x = torch.randn(2, *model.pretrained_cfg["input_size"])
    rec = _capture_and_compare(model, x, TEST_MODELS[name], raw_outputs, hand_pool)
    assert len(rec.layers) == len(rec.module_names)  # each activation module runs once per forward
    assert rec.skipped == {}


# (model name, create_model kwargs, input size, activation count, activation class, expected layout)
REAL_MODELS = [
    ("mobilenetv2_100", {}, 64, 35, nn.ReLU6, _layout_by_family({}, NCHW)),
    ("vit_small_patch16_224", {"img_size": 64}, 64, 12, nn.GELU, _layout_by_family({}, ("NLC", 1))),
    ("mixer_b16_224", {"img_size": 64}, 64, 24, nn.GELU, _layout_by_family({"mlp_tokens": ("NCL", 0)}, ("NLC", 0))),
    ("convnext_tiny", {}, 64, 18, timm_act.GELU, _layout_by_family({}, NHWC)),
    (
        "swin_tiny_patch4_window7_224",
        {"img_size": 64, "window_size": 2},
        64,
        12,
        nn.GELU,
        _layout_by_family({}, ("NLC", 0)),
    ),
    ("resnet50", {}, 64, 49, nn.ReLU, _layout_by_family({}, NCHW)),
]


@pytest.mark.parametrize(
    ("name", "kwargs", "size", "count", "act_type", "expected"), REAL_MODELS, ids=[m[0] for m in REAL_MODELS]
)
def test_real_architectures(name, kwargs, size, count, act_type, expected, raw_outputs, hand_pool):
    torch.manual_seed(0)
    model = timm.create_model(name, pretrained=False, **kwargs).eval()
    rec = _capture_and_compare(model, torch.randn(2, 3, size, size), expected, raw_outputs, hand_pool)
    assert len(rec.layers) == count
    assert all(type(model.get_submodule(label)) is act_type for label in rec.layers)


def test_mixer_token_and_channel_mixing_widths():
    model = timm.create_model("mixer_b16_224", pretrained=False, img_size=64).eval()
    infos = {info.name: info for info in describe_layers(model, torch.randn(1, 3, 64, 64))}
    token_mixing = infos["blocks.0.mlp_tokens.act"]
    channel_mixing = infos["blocks.0.mlp_channels.act"]
    assert (token_mixing.raw_shape, token_mixing.pooled_dim) == ((1, 768, 384), 768)
    assert (channel_mixing.raw_shape, channel_mixing.pooled_dim) == ((1, 16, 3072), 3072)


def test_vit_patch_tokens_exclude_the_class_token(raw_outputs):
    model = timm.create_model("vit_small_patch16_224", pretrained=False, img_size=64).eval()
    raw = raw_outputs(model, ["blocks.0.mlp.act"])
    x = torch.randn(2, 3, 64, 64)
    results = {}
    for tokens in ("patch", "all", "cls"):
        with FeatureRecorder(model, layers=["blocks.0.mlp.act"], tokens=tokens) as rec, torch.no_grad():
            model(x)
        results[tokens] = rec.features["blocks.0.mlp.act"]
    out = raw["blocks.0.mlp.act"][0]
    assert out.shape == (2, 17, 1536)
    torch.testing.assert_close(results["patch"], out[:, 1:].mean(1))
    torch.testing.assert_close(results["all"], out.mean(1))
    torch.testing.assert_close(results["cls"], out[:, 0])
