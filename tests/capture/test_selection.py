"""Which modules are selected: the default activation set, gates, globs, predicates, errors."""

from __future__ import annotations

import pytest
import timm
from timm.layers import BatchNormAct2d
from timm.layers import activations as timm_act
from timm.layers import activations_me as timm_act_me
from torch import nn

from cka_probe.capture.selection import ACTIVATION_TYPES, GATE_TYPES, is_activation, select_layers
from cka_probe.errors import LayerSelectionError


def _zoo() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(3, 4, 1),
        BatchNormAct2d(4, act_layer=nn.ReLU6),
        nn.Sequential(nn.Linear(4, 4), timm_act.GELU(), nn.Dropout(), nn.Tanh()),
        nn.Sigmoid(),
        nn.Hardsigmoid(),
        timm_act.HardSigmoid(),
        timm_act_me.HardSigmoidMe(),
        nn.Softmax(dim=1),
        timm_act_me.SwishMe(),
        nn.Identity(),
    )


def test_default_set_finds_torch_and_timm_activations_and_skips_gates():
    assert select_layers(_zoo()) == ["1.act", "2.1", "2.3", "8"]


@pytest.mark.parametrize(
    "cls", [c for c in ACTIVATION_TYPES if c not in (nn.GLU, nn.Threshold, nn.PReLU, timm_act.PReLU)]
)
def test_every_activation_class_is_selected(cls):
    assert is_activation(cls())
    assert select_layers(nn.Sequential(nn.Linear(2, 2), cls())) == ["1"]


@pytest.mark.parametrize(
    "cls",
    [
        nn.Sigmoid,
        nn.Hardsigmoid,
        nn.Softmin,
        nn.Softmax2d,
        timm_act.Sigmoid,
        timm_act.HardSigmoid,
        timm_act_me.HardSigmoidMe,
    ],
)
def test_gates_are_not_activations(cls):
    assert issubclass(cls, GATE_TYPES)
    assert not is_activation(cls())
    assert select_layers(nn.Sequential(nn.Linear(2, 2), cls(), nn.ReLU())) == ["2"]


def test_timm_gelu_is_found_although_it_is_not_torch_gelu():
    model = timm.create_model("test_convnext", pretrained=False)
    names = select_layers(model)
    assert len(names) == 9
    assert all(not isinstance(model.get_submodule(n), nn.GELU) for n in names)


def test_gates_selectable_by_glob():
    model = timm.create_model("test_efficientnet", pretrained=False)
    default = select_layers(model)
    gates = select_layers(model, "blocks.*.se.gate")
    assert gates and not set(gates) & set(default)
    assert all(isinstance(model.get_submodule(n), nn.Sigmoid) for n in gates)


def test_position_bias_mlp_left_out_of_default_but_selectable():
    model = timm.create_model("test_vit_relpos", pretrained=False)
    default = select_layers(model)
    assert default and not any("rel_pos" in n for n in default)
    assert len(select_layers(model, "*.rel_pos.mlp.act")) == len(default)


def test_patterns_keep_registration_order_and_never_select_the_model():
    model = _zoo()
    assert select_layers(model, ["8", "0", "2.*"]) == ["0", "2.0", "2.1", "2.2", "2.3", "8"]
    assert "" not in select_layers(model, "*")


def test_predicate():
    model = _zoo()
    assert select_layers(model, lambda name, module: isinstance(module, nn.Linear)) == ["2.0"]


def test_pattern_matching_nothing_names_close_matches():
    model = timm.create_model("test_vit", pretrained=False)
    with pytest.raises(LayerSelectionError) as info:
        select_layers(model, ["blocks.0.mlp.act", "blocks.0.mlp.actt"])
    message = str(info.value)
    assert "'blocks.0.mlp.actt'" in message and "blocks.0.mlp.act," in message
    assert "\n" not in message


def test_glob_matching_nothing_names_close_matches():
    with pytest.raises(LayerSelectionError, match=r"close matches: .*blocks\.\*\.mlp\.act"):
        select_layers(timm.create_model("test_vit", pretrained=False), "blocks.*.mlp.gelu")


def test_empty_or_non_string_patterns():
    with pytest.raises(LayerSelectionError, match="empty list"):
        select_layers(_zoo(), [])
    with pytest.raises(LayerSelectionError, match="not a string"):
        select_layers(_zoo(), ["0", 3])


def test_shared_module_selected_once():
    relu = nn.ReLU()
    model = nn.Sequential(nn.Linear(2, 2), relu, nn.Linear(2, 2), relu)
    assert select_layers(model) == ["1"]


def test_activation_set_covers_timms_registry_and_model_local_activations():
    from timm.layers import create_act
    from timm.models.metaformer import SquaredReLU, StarReLU
    from timm.models.nfnet import GammaAct

    registered = {cls for registry in create_act._ACT_LAYERS for cls in registry.values() if isinstance(cls, type)}
    for cls in registered - {nn.Identity}:
        assert issubclass(cls, GATE_TYPES) or cls in ACTIVATION_TYPES, cls
    for cls in (StarReLU, SquaredReLU, GammaAct):
        assert is_activation(cls())


@pytest.mark.parametrize("cls_name", ["StarReLU", "SquaredReLU"])
def test_metaformer_activations_are_recorded_at_their_output_not_their_inner_relu(cls_name):
    from timm.models import metaformer

    act = getattr(metaformer, cls_name)()
    model = nn.Sequential(nn.Linear(4, 8), act, nn.Sequential(nn.Linear(8, 8), nn.ReLU()))
    assert isinstance(act.relu, nn.ReLU)  # the inner relu exists, and is not recorded on its own
    assert select_layers(model) == ["1", "2.1"]
    # chosen by name, the inner relu can still be recorded
    assert select_layers(model, "1.relu") == ["1.relu"]


def test_every_nfnet_activation_is_recorded():
    from timm.models.nfnet import GammaAct

    model = timm.create_model("test_nfnet", pretrained=False, gamma_in_act=True)  # as dm_nfnet_f0 and nfnet_f0
    gamma = [name for name, module in model.named_modules() if isinstance(module, GammaAct)]
    acts = [name for name, module in model.named_modules() if isinstance(module, (GammaAct, nn.ReLU, nn.SiLU, nn.GELU))]
    assert len(gamma) > 10
    assert select_layers(model) == acts


def test_caformer_records_star_relu_not_its_relu():
    from timm.models.metaformer import StarReLU

    model = timm.create_model("caformer_s18", pretrained=False)
    names = select_layers(model)
    assert names and not any(name.endswith(".relu") for name in names)
    stars = [name for name, module in model.named_modules() if isinstance(module, StarReLU)]
    assert set(stars) <= set(names)
