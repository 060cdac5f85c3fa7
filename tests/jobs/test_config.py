from __future__ import annotations

from pathlib import Path

import pytest

from cka_probe.jobs import ConfigError, load_job_config, parse_job_config

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


def _zoo(**extra):
    return {
        "weights": "random",
        "data": {"source": "synthetic", "n": 8},
        "models": ["test_resnet", "test_vit"],
        **extra,
    }


def test_unknown_keys_name_the_key_and_the_valid_ones():
    with pytest.raises(ConfigError, match=r"unknown key 'modles'; valid keys are .*models"):
        parse_job_config({**_zoo(), "modles": []}, "zoo")
    with pytest.raises(
        ConfigError, match=r"unknown key 'data.num'; valid keys of data are batch_size, n, seed, skip_bad, source$"
    ):
        parse_job_config(_zoo(data={"num": 3}), "zoo")
    with pytest.raises(
        ConfigError, match=r"unknown key 'models\[1\].wieghts'; valid keys of models\[1\] are .*weights"
    ):
        parse_job_config(_zoo(models=["test_resnet", {"name": "test_vit", "wieghts": "random"}]), "zoo")


def test_bad_values_and_panels():
    with pytest.raises(ConfigError, match="analysis.kernel"):
        parse_job_config(_zoo(analysis={"kernel": "poly"}), "zoo")
    with pytest.raises(ConfigError, match="used twice"):
        parse_job_config(_zoo(models=["test_vit", "test_vit"]), "zoo")
    figure = {**_zoo(), "panels": [[["test_resnet", "resnet"]]]}
    with pytest.raises(ConfigError, match=r"'resnet' is not a model label"):
        parse_job_config(figure, "figure")


def test_overrides_and_defaults():
    config = parse_job_config(_zoo(), "zoo", {"data.n": 16, "analysis.permutations": 10, "weights": "pretrained"})
    assert config.data.n == 16 and config.analysis.permutations == 10 and config.data.seed == 0
    assert config.models[0].weights == "pretrained"
    assert parse_job_config(_zoo(), "zoo").digest() != config.digest()
    renamed = parse_job_config({**_zoo(), "output": {"dir": "elsewhere"}}, "zoo")
    assert renamed.digest() == parse_job_config(_zoo(), "zoo").digest()  # where outputs go does not change results


def test_shipped_configs_load(tmp_path):
    figure = load_job_config(CONFIGS / "figure6.yaml", "figure")
    assert [m.name for m in figure.models] == ["mobilenetv2", "vit_s", "mixer_b16"]
    assert len(figure.panels) == 3 and all(len(row) == 3 for row in figure.panels)
    assert all(a == b for a, b in figure.panels[0])  # first row: homogeneous
    assert all(a != b for row in figure.panels[1:] for a, b in row)
    zoos = sorted((CONFIGS / "zoo").glob("*.yaml"))
    assert zoos
    for path in zoos:
        zoo = load_job_config(path, "zoo")
        assert len(zoo.models) >= 10
    broken = tmp_path / "broken.yaml"
    broken.write_text("models: [a, b\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_job_config(broken, "zoo")
    with pytest.raises(ConfigError, match="does not exist"):
        load_job_config(tmp_path / "missing.yaml", "zoo")
