"""Recipes: Table 8 values in configs/ofa/*.yaml, and one-line errors for bad keys and values."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cka_probe._config import parse_override
from cka_probe.errors import ConfigError
from cka_probe.ofa.config import TrainConfig, load_config

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
        "rand_augment": None
        if column["RandAugment"] is None
        else "rand-m{}-mstd{}".format(*column["RandAugment"].split("/")),
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
    assert message.startswith(f"recipe {path}: unknown key 'lr_min'; valid keys are amp, batch_size,"), message
    assert message.endswith("; did you mean 'min_lr'?"), message


def test_unknown_override_key_and_method():
    with pytest.raises(ConfigError, match="unknown key 'epoch'; valid keys are .*; did you mean 'epochs'.$"):
        load_config(None, ["epoch=3"])
    with pytest.raises(
        ConfigError, match="method: input should be 'scratch', 'kd', 'fitnet', 'ofa' or 'ofa.fitnet' .got 'dkd'."
    ):
        load_config(None, ["method=dkd"])
    with pytest.raises(ConfigError, match="needs a teacher; set teacher in the recipe or --set teacher=MODEL"):
        load_config(None, ["method=ofa"])


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "epochs=ten",
            "epochs: input should be a valid integer .got 'ten'.; fix it in the file or with --set epochs=VALUE",
        ),
        ("epochs=0", "epochs: input should be greater than or equal to 1 .got 0."),
        ("epochs=1.5", "epochs: input should be a valid integer .got 1.5."),
        ("lr=fast", "lr: input should be a valid number .got 'fast'."),
        ("lr=.nan", r"lr: input should be greater than 0 \(got nan\)"),
        ("mixup=.inf", r"mixup: input should be a finite number \(got inf\)"),
        ("amp=maybe", "amp: input should be a valid boolean .got 'maybe'."),
        ("ofa_stages=2", "ofa_stages: input should be a valid list .got 2."),
        (
            "ofa_stages=[1, 5]",
            r"ofa_stages\[1\]: input should be 1, 2, 3 or 4 .got 5.; fix it in the file or with --set ofa_stages=\[...\]",
        ),
        ("ofa_stages=[2, 2]", "ofa_stages: list each stage .1 to 4. once"),
        ("reprob=1.5", "reprob: input should be less than or equal to 1 .got 1.5."),
        ("dataset=mnist", "dataset: input should be 'imagenet', 'cifar100' or 'fashion_mnist' .got 'mnist'."),
        ("opt=adamx", "opt: use a timm optimizer name, e.g. sgd, momentum or adamw"),
        ("sched=plateau", "sched: input should be 'cosine', 'tanh', 'step', 'multistep', 'poly' or 'none'"),
        ("device=gpu", "device: must be auto, cpu, mps, cuda or cuda:N .got 'gpu'."),
        ("crop_scale=[0.5, 0.1]", "crop_scale: must be .min, max. area fractions with 0 < min <= max"),
        ("crop_scale=[0.5]", "crop_scale: list should have at least 2 items"),
        ("student_kwargs=[1]", "student_kwargs: input should be a valid dictionary"),
        ("nokey", "write it as key=value"),
        ("epochs=[1", "the value is not valid YAML"),
    ],
)
def test_bad_values_are_one_line_errors(override, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(None, [override])
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            ["mixup=0.8", "batch_size=3"],
            "mixup and cutmix need an even batch_size, got 3; fix it with --set batch_size",
        ),
        (
            ["method=ofa", "teacher=test_vit", "ofa_stages=[1, 2]", "ofa_gamma=[1.0, 1.5]"],
            r"ofa_gamma has 2 values; give one, or 3 \(one per stage of ofa_stages plus one for the logits\)",
        ),
        (
            ["method=ofa", "teacher=test_vit", "ofa_loss_weight=[1, 2, 3]"],
            r"ofa_loss_weight has 3 values; give one, or 4 \(one per stage of ofa_stages\)",
        ),
        (
            ["warmup_epochs=5", "warmup_lr=0"],
            "warmup_lr 0 with a per-epoch schedule trains the first epoch at learning rate 0; set --set warmup_lr",
        ),
    ],
)
def test_keys_that_must_agree(overrides, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, overrides)
    load_config(None, [*overrides[:-1]])  # each alone is fine


def test_warmup_from_zero_is_fine_per_update():
    """Per update, the first step at learning rate 0 is one step, not an epoch."""
    assert load_config(None, ["warmup_epochs=5", "warmup_lr=0", "sched_on_updates=true"]).warmup_lr == 0


def test_numbers_in_exponent_form_and_ints_are_floats(tmp_path):
    """YAML 1.1 reads ``1e-3`` (no dot) as a string; the recipe reads it as the number, and an int as a float."""
    path = tmp_path / "recipe.yaml"
    path.write_text("lr: 1e-3\nmin_lr: 0\nwarmup_lr: 2.5E+0\n")
    config = load_config(path)
    assert (config.lr, config.min_lr, config.warmup_lr) == (0.001, 0.0, 2.5)
    assert all(type(v) is float for v in (config.lr, config.min_lr, config.warmup_lr))
    with pytest.raises(ConfigError, match="lr: input should be a valid number .got '1e-3x'."):
        load_config(path, ["lr=1e-3x"])


def test_overrides_parse_as_yaml_and_numbers_coerce():
    config = load_config(
        None, ["lr=1e-3", "ofa_stages=[2, 4]", "ofa_gamma=[1.2, 1.3, 1.4]", "teacher=test_vit", "method=ofa"]
    )
    assert config.lr == 0.001 and config.ofa_stages == [2, 4] and config.ofa_gamma == [1.2, 1.3, 1.4]
    assert parse_override("student_kwargs={depth: 2}") == ("student_kwargs", {"depth": 2})
    assert TrainConfig.from_dict(config.to_dict()) == config


def test_missing_or_malformed_file(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    (tmp_path / "list.yaml").write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="must hold a mapping"):
        load_config(tmp_path / "list.yaml")
    (tmp_path / "broken.yaml").write_text("epochs: [1\n")
    with pytest.raises(ConfigError, match="is not valid YAML at line 2; fix its syntax"):
        load_config(tmp_path / "broken.yaml")


def test_every_recipe_in_configs_loads():
    recipes = sorted(p for p in CONFIGS.rglob("*.yaml") if p.name != "analysis.yaml" and "teachers" not in p.parts)
    assert len(recipes) == 8
    for path in recipes:
        config = load_config(path)
        assert config.method == "ofa" and config.teacher, path
