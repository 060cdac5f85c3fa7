"""The layout rules, one by one, in the order they apply."""

from __future__ import annotations

import pytest
import timm
import torch
from timm.layers import BatchNormAct2d, LayerNorm2d, LayerNormAct
from timm.models.mlp_mixer import MixerBlock
from torch import nn

from cka_probe.capture.layouts import LayerLayout, ancestors_of, num_prefix_tokens, resolve_layout
from cka_probe.errors import LayerSelectionError, ShapeError


class Opaque(nn.Module):
    """A module of no known class: it tells nothing about its output's layout."""

    def forward(self, x):
        return x


class WithPrefix(nn.Sequential):
    num_prefix_tokens = 1


def _resolve(model, name, shape, **kwargs):
    return resolve_layout(name, model.get_submodule(name), shape, ancestors_of(model, name), **kwargs)


# --------------------------------------------------------------------------- 1. overrides


def test_override_beats_structure():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())
    assert _resolve(mlp, "1", (2, 5, 16)).layout == "NLC"
    decided = _resolve(mlp, "1", (2, 5, 16), overrides={"1": "NCL"})
    assert decided == LayerLayout("NCL", 0, "override 1=NCL")


def test_first_matching_override_wins_and_tokens_keep_prefix():
    model = WithPrefix(nn.Linear(8, 16), nn.GELU())
    decided = _resolve(model, "1", (2, 5, 16), overrides={"0": "NCL", "[0-9]": "NLC", "*": "NCL"})
    assert (decided.layout, decided.prefix_tokens) == ("NLC", 1)


def test_override_of_wrong_rank_is_an_error():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())
    with pytest.raises(
        LayerSelectionError,
        match=r"override \*=NCHW is 4-D but the output \(2, 5, 16\) is 3-D; use --layouts-a/-b .1=NCL. \(identify: --layouts; layouts: NCL, NLC\)",
    ):
        _resolve(mlp, "1", (2, 5, 16), overrides={"*": "NCHW"})
    with pytest.raises(LayerSelectionError, match="unknown layout 'CHW'"):
        _resolve(mlp, "1", (2, 5, 16), overrides={"*": "CHW"})


# --------------------------------------------------------------------------- 2. rank


def test_two_dimensional_outputs_are_nc_and_other_ranks_fail():
    model = nn.Sequential(Opaque(), nn.ReLU())
    assert _resolve(model, "1", (2, 7)).layout == "NC"
    with pytest.raises(ShapeError, match="1-D"):
        _resolve(model, "1", (2,))
    with pytest.raises(ShapeError, match="6-D"):
        _resolve(model, "1", (2, 3, 4, 5, 6, 7))


# --------------------------------------------------------------------------- 3. families


def test_mixer_token_mixing_pools_the_token_mixing_width():
    model = nn.Sequential(MixerBlock(dim=8, seq_len=4))
    token_hidden = model[0].mlp_tokens.fc1.out_features
    decided = _resolve(model, "0.mlp_tokens.act", (2, 8, token_hidden))
    assert (decided.layout, decided.prefix_tokens) == ("NCL", 0)
    assert decided.source.startswith("family: token-mixing MLP of MixerBlock '0'")
    # Without the family rule, fc1 (a Linear) would have made it channels last: the rule matters.
    assert (
        resolve_layout(
            "act", model[0].mlp_tokens.act, (2, 8, token_hidden), ancestors_of(model[0].mlp_tokens, "act")
        ).layout
        == "NLC"
    )
    channel_mixing = _resolve(model, "0.mlp_channels.act", (2, 4, model[0].mlp_channels.fc1.out_features))
    assert channel_mixing.layout == "NLC" and channel_mixing.source.startswith("structure")


def test_attention_pool_latents_have_no_prefix_tokens():
    model = timm.create_model("test_vit3", pretrained=False)
    assert model.num_prefix_tokens == 1
    hidden = model.attn_pool.mlp.fc1.out_features
    decided = _resolve(model, "attn_pool.mlp.act", (2, 1, hidden))
    assert (decided.layout, decided.prefix_tokens) == ("NLC", 0)
    block = _resolve(model, "blocks.0.mlp.act", (2, 101, model.blocks[0].mlp.fc1.out_features))
    assert (block.layout, block.prefix_tokens) == ("NLC", 1)


# --------------------------------------------------------------------------- 4. structure


def test_module_that_is_itself_a_producer():
    model = nn.Sequential(nn.Linear(8, 16), nn.Conv2d(3, 6, 1))
    assert _resolve(model, "0", (2, 5, 16)).layout == "NLC"
    assert _resolve(model, "1", (2, 6, 7, 7)).layout == "NCHW"


@pytest.mark.parametrize(
    ("norm", "shape", "layout"),
    [
        (BatchNormAct2d(4), (2, 4, 3, 5), "NCHW"),
        (LayerNormAct(4), (2, 3, 5, 4), "NHWC"),
    ],
)
def test_activation_inside_a_norm_act_module(norm, shape, layout):
    model = nn.Sequential(norm)
    decided = _resolve(model, "0.act", shape)
    assert decided.layout == layout and decided.source == f"structure: inside {type(norm).__name__} '0'"


def test_preceding_sibling_skipping_shape_preserving_modules():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.Dropout(), nn.Identity(), nn.GELU())
    decided = _resolve(mlp, "3", (2, 4, 4, 16))
    assert decided == LayerLayout("NHWC", 0, "structure: follows Linear '0'")


def test_layernorm2d_is_channels_first_although_a_layernorm():
    assert issubclass(LayerNorm2d, nn.LayerNorm)
    model = nn.Sequential(LayerNorm2d(6), nn.GELU())
    assert _resolve(model, "1", (2, 6, 6, 6)).layout == "NCHW"


def test_reused_module_decided_by_agreeing_siblings():
    block = nn.Module()
    block.conv1, block.bn1 = nn.Conv2d(8, 4, 1), nn.BatchNorm2d(4)
    block.conv2, block.bn2 = nn.Conv2d(4, 16, 1), nn.BatchNorm2d(16)
    block.relu = nn.ReLU()
    model = nn.Sequential(block)
    # First call after bn1: 4 channels, while the preceding sibling bn2 has 16.
    first = _resolve(model, "0.relu", (2, 4, 9, 9))
    assert first.layout == "NCHW" and first.source.startswith("structure: all layers in '0' are channels-first")
    assert _resolve(model, "0.relu", (2, 16, 9, 9)).source == "structure: follows BatchNorm2d '0.bn2'"


def test_producer_with_other_channel_count_does_not_decide():
    # (2, 16, 5, 7) after Linear(8, 16): channels last would mean 7 channels, which no Linear has.
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())
    with pytest.raises(LayerSelectionError, match="no structural rule"):
        _resolve(mlp, "1", (2, 16, 5, 7))


# --------------------------------------------------------------------------- 5. shape


@pytest.mark.parametrize(
    ("shape", "image", "layout"),
    [
        ((2, 16, 8, 8), (32, 32), "NCHW"),
        ((2, 8, 8, 16), (32, 32), "NHWC"),
        ((2, 32, 8, 6), (64, 48), "NCHW"),
        ((2, 8, 6, 32), (64, 48), "NHWC"),
        ((2, 10, 16), (64, 64), "NCL"),
    ],
)
def test_shape_rule_takes_the_only_fitting_reading(shape, image, layout):
    model = nn.Sequential(Opaque(), nn.ReLU())
    decided = _resolve(model, "1", shape, image_size=image)
    assert decided.layout == layout and decided.source.startswith(f"shape: only {layout} fits")


def test_shape_rule_counts_prefix_tokens():
    model = WithPrefix(Opaque(), nn.ReLU())
    decided = _resolve(model, "1", (2, 17, 10), image_size=(64, 64))  # 1 + 4x4 tokens, 10 channels
    assert (decided.layout, decided.prefix_tokens) == ("NLC", 1)


@pytest.mark.parametrize(
    ("shape", "image", "verdict"),
    [
        ((2, 8, 8, 8), (32, 32), "both"),
        ((2, 5, 7, 3), (32, 32), "neither"),
    ],
)
def test_shape_rule_never_picks_between_two_readings(shape, image, verdict):
    model = nn.Sequential(Opaque(), nn.ReLU())
    with pytest.raises(LayerSelectionError) as info:
        _resolve(model, "1", shape, image_size=image)
    message = str(info.value)
    assert f"{verdict} of NCHW and NHWC fit the 32x32 input" in message
    assert "use --layouts-a/-b '1=NCHW' (identify: --layouts; layouts: NCHW, NHWC)" in message and "\n" not in message


def test_shape_rule_needs_an_image_input_and_skips_5d():
    model = nn.Sequential(Opaque(), nn.ReLU())
    with pytest.raises(LayerSelectionError, match="not an \\(N, C, H, W\\) image"):
        _resolve(model, "1", (2, 16, 8, 8))
    with pytest.raises(LayerSelectionError, match="5-D outputs are never read from their shape"):
        _resolve(model, "1", (2, 4, 4, 4, 4), image_size=(16, 16))


# --------------------------------------------------------------------------- helpers


def test_prefix_tokens_from_nearest_ancestor():
    inner = WithPrefix(nn.ReLU())
    inner.num_prefix_tokens = 3
    outer = WithPrefix(inner, nn.Sequential(nn.ReLU()))
    outer[1].num_prefix_tokens = True  # a bool is not a count
    assert num_prefix_tokens(ancestors_of(outer, "0.0")) == 3
    assert num_prefix_tokens(ancestors_of(outer, "1.0")) == 1
    assert num_prefix_tokens(ancestors_of(nn.Sequential(nn.ReLU()), "0")) == 0


def test_layer_layout_validates():
    assert LayerLayout("NHWC").spatial_dims == (1, 2) and LayerLayout("NHWC").channel_dim == 3
    with pytest.raises(ShapeError, match="no tokens"):
        LayerLayout("NCHW", prefix_tokens=1)
    with pytest.raises(LayerSelectionError, match="unknown layout"):
        LayerLayout("HWC")


def test_real_vit_layout_and_prefix():
    model = timm.create_model("test_vit", pretrained=False)
    hidden = model.blocks[0].mlp.fc1.out_features
    tokens = model.patch_embed.num_patches + model.num_prefix_tokens
    decided = _resolve(model, "blocks.0.mlp.act", (1, tokens, hidden), image_size=(160, 160))
    assert tokens == 1 + 10 * 10
    assert decided == LayerLayout(
        "NLC", 1, "structure: follows Linear 'blocks.0.mlp.fc1'; 101 tokens = 1 prefix + 100 patches"
    )
    # the same layer without its class token (as in ConViT's early blocks) has no prefix token
    patches_only = _resolve(model, "blocks.0.mlp.act", (1, tokens - 1, hidden), image_size=(160, 160))
    assert patches_only.prefix_tokens == 0
    unknown = _resolve(model, "blocks.0.mlp.act", (1, tokens, hidden))  # no image size: num_prefix_tokens
    assert unknown.prefix_tokens == 1 and "input size unknown" in unknown.source


def test_levit_linear_norm_is_channels_last():
    """LeViT's MLP runs on (N, tokens, C) through LinearNorm (Linear + BatchNorm1d on flattened tokens)."""
    import timm

    from cka_probe.capture import describe_layers

    model = timm.create_model("levit_128s", pretrained=False).eval()
    infos = describe_layers(model, torch.zeros(1, 3, 224, 224))
    stem = [i for i in infos if i.name.startswith("stem.")]
    blocks = [i for i in infos if i.name.startswith("stages.")]
    assert stem and all(i.layout == "NCHW" for i in stem)
    assert blocks and all(i.layout == "NLC" for i in blocks)
    assert all(i.pooled_dim == i.raw_shape[-1] for i in blocks)


def test_prefix_tokens_decided_per_layer_from_the_token_count():
    mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())  # no num_prefix_tokens: the class-token counts are given

    def prefix(count, **kwargs):
        return _resolve(mlp, "1", (2, count, 16), image_size=(64, 64), class_tokens=(2,), **kwargs)

    assert prefix(18).prefix_tokens == 2  # 2 + a 4x4 grid; 18 itself is no grid of the 64x64 input
    assert prefix(16).prefix_tokens == 0  # the patches alone (as before ConViT's class token)
    assert prefix(2).prefix_tokens == 2 and "all class tokens" in prefix(2).source
    assert prefix(20, grids={18}).prefix_tokens == 2  # a patch grid the model made comes first
    with pytest.raises(LayerSelectionError, match=r"^layer 1: its 19 tokens are not the patch grid .* --tokens all"):
        prefix(19)
    assert prefix(19, tokens="all").prefix_tokens == 0
