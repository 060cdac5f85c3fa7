"""Names: aliases, timm names, families, suggestions for unknown names, registering aliases."""

from __future__ import annotations

import fnmatch

import pytest
import timm
import timm.models
from timm.models import build_model_with_cfg, register_model
from timm.models.vision_transformer import VisionTransformer

from cka_probe.errors import ArgumentError, CKAProbeError, UnknownModelError
from cka_probe.models import ALIASES, FAMILIES, family_of, list_models, load_model, register_alias, resolve_name

PAPER_ALIASES = {
    "mobilenetv2": ("mobilenetv2_100", "cnn"),
    "vit_s": ("vit_small_patch16_224", "vit"),
    "vit_b": ("vit_base_patch16_224", "vit"),
    "mixer_b16": ("mixer_b16_224", "mlp"),
    "resnet18": ("resnet18", "cnn"),
    "resnet50": ("resnet50", "cnn"),
    "deit_t": ("deit_tiny_patch16_224", "vit"),
    "swin_t": ("swin_tiny_patch4_window7_224", "vit"),
    "convnext_t": ("convnext_tiny", "cnn"),
    "resmlp_s12": ("resmlp_12_224", "mlp"),
}


@register_model
def cka_probe_test_tiny_vit(pretrained: bool = False, **kwargs) -> VisionTransformer:
    """A custom architecture registered with timm from outside timm (as a Swin-Nano would be)."""
    model_args = dict(img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2, num_classes=4)
    return build_model_with_cfg(VisionTransformer, "cka_probe_test_tiny_vit", pretrained, **dict(model_args, **kwargs))


@pytest.fixture
def restore_aliases():
    saved = dict(ALIASES)
    yield
    ALIASES.clear()
    ALIASES.update(saved)


@pytest.mark.parametrize("alias", sorted(PAPER_ALIASES))
def test_paper_aliases_resolve_to_timm_models_with_their_family(alias):
    spec = resolve_name(alias)
    assert (spec.timm_name, spec.family) == PAPER_ALIASES[alias]
    assert spec.name == alias
    assert timm.models.is_model(spec.timm_name)


def test_every_alias_points_to_a_timm_model_and_a_known_family():
    for alias, (timm_name, family) in ALIASES.items():
        assert timm.models.is_model(timm_name), alias
        assert family in FAMILIES, alias


@pytest.mark.parametrize(
    ("timm_name", "family"),
    [
        ("test_resnet", "cnn"),
        ("test_efficientnet", "cnn"),
        ("test_convnext", "cnn"),
        ("test_vit", "vit"),
        ("swin_tiny_patch4_window7_224", "vit"),
        ("mixer_s16_224", "mlp"),
        ("resmlp_24_224", "mlp"),
        ("gmlp_s16_224", "mlp"),
        ("test_coatnet", "hybrid"),
        ("levit_128", "hybrid"),
        ("sequencer2d_s", "unknown"),  # an LSTM model: its module is not in the table
        ("vit_small_patch16_224.augreg_in21k", "vit"),  # a pretrained tag keeps the architecture's family
    ],
)
def test_family_of_any_timm_name_follows_its_timm_module(timm_name, family):
    assert family_of(timm_name) == family
    assert resolve_name(timm_name).family == family


def test_a_model_registered_outside_timm_has_unknown_family_until_an_alias_gives_one(restore_aliases):
    assert family_of("cka_probe_test_tiny_vit") == "unknown"
    register_alias("tiny_n", "cka_probe_test_tiny_vit", "hybrid")
    assert resolve_name("tiny_n").timm_name == "cka_probe_test_tiny_vit"
    assert family_of("cka_probe_test_tiny_vit") == "hybrid"
    loaded = load_model("tiny_n", weights="random")
    assert loaded.family == "hybrid"
    assert loaded.timm_name == "cka_probe_test_tiny_vit"
    assert loaded.data_config["input_size"] == (3, 224, 224)  # no pretrained config: timm's defaults


def test_resolve_is_case_insensitive_and_keeps_the_name_as_given():
    spec = resolve_name("ViT_S")
    assert spec.timm_name == "vit_small_patch16_224"
    assert spec.name == "ViT_S"
    assert resolve_name("Test_ResNet").timm_name == "test_resnet"


def test_unknown_name_suggests_close_aliases_and_timm_names_in_one_line():
    with pytest.raises(UnknownModelError) as info:
        resolve_name("vit_ss")
    message = str(info.value)
    assert "'vit_ss'" in message and "vit_s" in message and "list_models" in message
    assert "\n" not in message
    assert isinstance(info.value, CKAProbeError)
    with pytest.raises(UnknownModelError, match="resnet50"):
        resolve_name("resnet_50")


def test_unknown_pretrained_tag_suggests_the_known_tags():
    with pytest.raises(UnknownModelError, match=r"pretrained tag 'resnet18\.a1_in1kk'.*resnet18\.a1_in1k"):
        resolve_name("resnet18.a1_in1kk")
    assert resolve_name("resnet18.a1_in1k").timm_name == "resnet18.a1_in1k"


def test_unknown_model_is_refused_by_load_model_before_building_anything():
    with pytest.raises(UnknownModelError, match="did you mean"):
        load_model("mixer_b61", weights="random")


def test_register_alias_refuses_bad_family_empty_name_and_silent_redefinition(restore_aliases):
    with pytest.raises(ArgumentError, match="unknown family 'transformer'; use one of cnn, vit, mlp, hybrid, unknown"):
        register_alias("x", "test_vit", "transformer")
    with pytest.raises(ArgumentError, match="must be a non-empty name without surrounding spaces"):
        register_alias(" x", "test_vit", "vit")
    with pytest.raises(ArgumentError, match="non-empty"):
        register_alias("", "test_vit", "vit")
    with pytest.raises(ArgumentError, match="already points to vit_small_patch16_224 .vit.; pass overwrite=True"):
        register_alias("vit_s", "test_vit", "vit")
    register_alias("vit_s", "test_vit", "vit", overwrite=True)
    assert resolve_name("vit_s").timm_name == "test_vit"


def test_alias_to_a_model_timm_does_not_know_fails_when_used(restore_aliases):
    register_alias("pico_unregistered", "swin_pico_not_registered", "vit")
    with pytest.raises(UnknownModelError, match="import the module that registers it"):
        resolve_name("pico_unregistered")


def test_list_models_gives_matching_aliases_then_timm_names(restore_aliases):
    register_alias("vit_tiny_alias", "test_vit", "vit")
    names = list_models("vit_*")
    aliases = sorted(a for a in ALIASES if fnmatch.fnmatchcase(a, "vit_*"))
    assert {"vit_b", "vit_s", "vit_tiny_alias"} <= set(aliases)
    assert names == aliases + timm.list_models("vit_*")
    assert "vit_small_patch16_224" in names
    assert "mixer_b16" not in names and "resnet18" not in names
    everything = list_models()
    assert set(ALIASES) <= set(everything)
    assert len(everything) == len(set(everything))
    assert set(timm.list_models()) <= set(everything)
