"""Recipes: Table 8 values in configs/ofa/*.yaml, and one-line errors for bad keys and values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cka_probe.errors import ConfigError
from cka_probe.ofa.config import TrainConfig, load_config, parse_override

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ofa"

# Table 8 of the supplementary material, transcribed: "-" is None.
TABLE_8 = {
    #                      ImageNet CNN     ImageNet ViT/MLP   CIFAR-100 CNN   CIFAR-100 ViT/MLP
    "Epochs":             (100,             300,               300,            300),
    "Batch size":         (512,             1024,              1024,           1024),
    "Initial LR":         (0.1,             5e-4,              5e-2,           5e-4),
    "Minimum LR":         (1e-6,            1e-6,              1e-3,           1e-5),
    "Optimizer":          ("SGD",           "AdamW",           "SGD",          "AdamW"),
    "Weight decay":       (1e-4,            5e-2,              2e-3,           5e-2),
    "LR schedule":        ("x0.1 at [30,60,90]", "Cosine",     "Cosine",       "Cosine"),
    "Warmup":             (3,               20,                3,              20),
    "EMA":                (None,            0.99996,           None,           None),
    "RandAugment":        (None,            "9/0.5",           None,           "9/0.5"),
    "Mixup":              (None,            0.8,               None,           0.8),
    "Cutmix":             (None,            1.0,               None,           1.0),
    "RE prob":            (None,            0.25,              None,           0.25),
}  # fmt: skip
RECIPES = ("imagenet_cnn", "imagenet_vit_mlp", "cifar100_cnn", "cifar100_vit_mlp")


def _table_column(index: int) -> dict:
    column = {row: values[index] for row, values in TABLE_8.items()}
    schedule = column["LR schedule"]
    return {
        "epochs": column["Epochs"],
        "batch_size": column["Batch size"],
        "lr": column["Initial LR"],
        "min_lr": column["Minimum LR"],
        "opt": {"SGD": "sgd", "AdamW": "adamw"}[column["Optimizer"]],  # timm names, as the reference configs
        "weight_decay": column["Weight decay"],
        "sched": "multistep" if schedule.startswith("x0.1") else "cosine",
        "warmup_epochs": column["Warmup"],
        "ema_decay": column["EMA"],
        "rand_augment": None if column["RandAugment"] is None else "rand-m{}-mstd{}".format(*column["RandAugment"].split("/")),
        "mixup": column["Mixup"] or 0.0,
        "cutmix": column["Cutmix"] or 0.0,
        "reprob": column["RE prob"] or 0.0,
    }


@pytest.mark.parametrize("index, recipe", list(enumerate(RECIPES)))
def test_recipe_matches_table_8(index, recipe):
    path = CONFIGS / f"{recipe}.yaml"
    raw = yaml.safe_load(path.read_text())
    config = load_config(path)
    for key, expected in _table_column(index).items():
        assert key in raw, f"{recipe}.yaml does not state {key}"
        assert getattr(config, key) == expected, key
    if config.sched == "multistep":
        assert (config.decay_milestones, config.decay_rate) == ([30, 60, 90], 0.1)
    assert config.dataset == ("imagenet" if recipe.startswith("imagenet") else "cifar100")


def test_unknown_key_names_the_key_and_the_valid_ones(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("method: scratch\nlr_min: 1.0e-5\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert "unknown key 'lr_min'" in message and "did you mean 'min_lr'" in message
    assert "valid keys: method, student," in message


def test_unknown_override_key_and_method():
    with pytest.raises(ConfigError, match="unknown key 'epoch' in overrides .*'epochs'"):
        load_config(None, ["epoch=3"])
    with pytest.raises(ConfigError, match="unknown method 'dkd'; valid methods: scratch, kd, fitnet, ofa"):
        load_config(None, ["method=dkd"])
    with pytest.raises(ConfigError, match="needs a teacher"):
        load_config(None, ["method=ofa"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("epochs=ten", "epochs must be an integer"),
        ("epochs=0", "epochs must be positive"),
        ("lr=fast", "lr must be a number"),
        ("amp=maybe", "amp must be true or false"),
        ("ofa_stages=2", "ofa_stages must be a list"),
        ("reprob=1.5", r"reprob must lie in \[0, 1\]"),
        ("dataset=mnist", "unknown dataset 'mnist'"),
        ("nokey", "is not key=value"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_overrides_parse_as_yaml_and_numbers_coerce():
    config = load_config(None, ["lr=1e-3", "ofa_stages=[2, 4]", "ofa_gamma=[1.2, 1.3, 1.4]", "teacher=test_vit", "method=ofa"])
    assert config.lr == 0.001 and config.ofa_stages == [2, 4] and config.ofa_gamma == [1.2, 1.3, 1.4]
    assert parse_override("student_kwargs={depth: 2}") == ("student_kwargs", {"depth": 2})
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
