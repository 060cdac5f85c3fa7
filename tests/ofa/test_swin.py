"""Swin-Nano and Swin-Pico (sec. B.2) are registered with timm when cka_probe.models is imported."""

from __future__ import annotations

import pytest
import timm

import cka_probe.models  # noqa: F401  (registers the models)
from cka_probe.errors import ConfigError
from cka_probe.models import resolve_name


@pytest.mark.parametrize(
    "name, embed",
    [("swin_nano_patch4_window7_224", 64), ("swin_pico_patch4_window7_224", 48)],
)
def test_variants_have_the_paper_configuration(name, embed):
    assert name in timm.list_models("swin_*")
    model = timm.create_model(name, num_classes=10)
    assert model.embed_dim == embed
    assert [len(stage.blocks) for stage in model.layers] == [2, 2, 2, 2]
    assert [stage.blocks[0].attn.num_heads for stage in model.layers] == [2, 4, 8, 16]
    assert model.patch_embed.patch_size == (4, 4)
    assert model.layers[0].blocks[0].window_size == (7, 7)
    assert model.num_features == embed * 8
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)


def test_no_pretrained_weights():
    with pytest.raises(ConfigError, match="no pretrained weights"):
        timm.create_model("swin_nano_patch4_window7_224", pretrained=True)


def test_aliases_resolve_to_the_variants():
    for alias, name in (
        ("swin_n", "swin_nano_patch4_window7_224"),
        ("swin_p", "swin_pico_patch4_window7_224"),
    ):
        spec = resolve_name(alias)
        assert (spec.timm_name, spec.family) == (name, "vit")
