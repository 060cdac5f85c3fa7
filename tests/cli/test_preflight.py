"""Every model, checkpoint and layer pattern a figure, zoo or identify job names is resolved before the first
forward pass: a mistake anywhere in the config is one line, exit code 2, nothing computed and no output folder."""

from __future__ import annotations

import re

import timm
import torch
import yaml
from click.testing import CliRunner

import cka_probe.jobs.identify as identify_module
from cka_probe.cli.main import main

ZOO = {
    "weights": "random",
    "data": {"source": "embedded", "n": 8},
    "models": ["test_resnet", "test_vit", "test_convnext", "test_efficientnet"],
}
FIGURE = {
    "weights": "random",
    "data": {"source": "embedded", "n": 8},
    "models": [{"name": "test_resnet", "label": "R"}, {"name": "test_vit", "label": "V"}],
    "panels": [[["R", "V"]]],
    "output": {"formats": ["png"]},
}


def _write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


def _run(*args):
    return CliRunner().invoke(main, list(args))


def _save(path, name, seed=0):
    torch.manual_seed(seed)
    torch.save(timm.create_model(name, pretrained=False).state_dict(), path)
    return str(path)


def test_zoo_with_a_typo_in_its_last_model_stops_before_any_model_runs(tmp_path, forward_passes, assert_one_line_error):
    config = _write(tmp_path, "zoo.yaml", {**ZOO, "models": [*ZOO["models"][:3], "resnet81"]})
    out = tmp_path / "zoo"
    result = _run("zoo", config, "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, "zoo.yaml: model resnet81: unknown model 'resnet81'", "did you mean resnet18")
    suggested = re.search(r"did you mean ([^?]*)\?", result.output).group(1).split(", ")
    assert len(suggested) == len(set(suggested)), suggested  # resnet18 is an alias and a timm name: listed once
    assert forward_passes == []
    assert not out.exists()


def test_zoo_with_a_layer_pattern_that_matches_nothing(tmp_path, forward_passes, assert_one_line_error):
    models = [*ZOO["models"][:2], {"name": "test_convnext", "layers": ["stages.*.blocks.*.mlp.actt"]}]
    config = _write(tmp_path, "zoo.yaml", {**ZOO, "models": models})
    out = tmp_path / "zoo"
    result = _run("zoo", config, "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(
        result, "model test_convnext: layer pattern 'stages.*.blocks.*.mlp.actt' matches no module", "mlp.act"
    )
    assert forward_passes == [] and not out.exists()


def test_figure_with_a_checkpoint_of_another_architecture(tmp_path, forward_passes, assert_one_line_error):
    vit_weights = _save(tmp_path / "vit.pth", "test_vit")
    models = [{"name": "test_resnet", "label": "R", "checkpoint": vit_weights}, {"name": "test_vit", "label": "V"}]
    config = _write(tmp_path, "fig.yaml", {**FIGURE, "models": models})
    out = tmp_path / "out"
    result = _run("figure", config, "--out", str(out), "--no-progress", "--cache-dir", str(tmp_path / "cache"))
    assert_one_line_error(result, "fig.yaml: model R: checkpoint", "test_resnet")
    assert forward_passes == [] and not out.exists()


def test_figure_with_a_missing_checkpoint_and_an_unknown_model(tmp_path, forward_passes, assert_one_line_error):
    models = [{"name": "test_resnet", "label": "R", "checkpoint": str(tmp_path / "nope.pth")}, {"name": "test_vit"}]
    config = _write(tmp_path, "fig.yaml", {**FIGURE, "models": models, "panels": [[["R", "test_vit"]]]})
    result = _run("figure", config, "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(result, "fig.yaml: model R: checkpoint", "nope.pth does not exist")
    models = [{"name": "test_resnet", "label": "R"}, {"name": "test_vitt", "label": "V"}]
    config = _write(tmp_path, "fig2.yaml", {**FIGURE, "models": models})
    result = _run("figure", config, "--out", str(tmp_path / "out"), "--no-progress")
    assert_one_line_error(result, "fig2.yaml: model V: unknown model 'test_vitt'", "did you mean test_vit")
    assert forward_passes == [] and not (tmp_path / "out").exists()


def test_identify_checks_every_checkpoint_before_the_first_network_runs(tmp_path, monkeypatch, assert_one_line_error):
    recorded = []
    real = identify_module._record_network
    monkeypatch.setattr(
        identify_module, "_record_network", lambda net, *a, **k: recorded.append(net) or real(net, *a, **k)
    )
    nets = [_save(tmp_path / f"seed{s}.pth", "test_resnet", s) for s in range(2)]
    other = _save(tmp_path / "other.pth", "test_vit")
    out = tmp_path / "o"
    args = ["identify", *nets, other, "--model", "test_resnet", "--data", "synthetic", "-n", "8", "--no-progress"]
    assert_one_line_error(_run(*args, "--out", str(out)), "network other.pth: checkpoint", "test_resnet")
    assert_one_line_error(
        _run(*args[:3], *args[4:], "--layers", "layer9.*", "--out", str(out)),
        "network seed0.pth: layer pattern 'layer9.*' matches no module",
    )
    assert recorded == [] and not out.exists()


def test_cka_settings_of_a_job_file_are_one_line_in_its_keys(tmp_path, forward_passes, assert_one_line_error):
    """figure and zoo files run compare's check of the CKA settings, and the message names the file's keys."""
    config = _write(tmp_path, "zoo.yaml", ZOO)
    out = tmp_path / "out"
    result = _run(
        "zoo", config, "--set", "analysis.estimator=minibatch", "--set", "analysis.precision=float32",
        "--out", str(out), "--no-progress",
    )  # fmt: skip
    assert_one_line_error(
        result, "analysis.precision: float32 applies to the full estimator", "use analysis.estimator: full"
    )
    figure = _write(tmp_path, "fig.yaml", FIGURE)
    result = _run("figure", figure, "--set", "data.batch_size=4", "--set", "analysis.pool=flatten", "--out", str(out))
    assert_one_line_error(result, "analysis.pool: flatten with analysis.estimator: full needs all n=8 images")
    assert forward_passes == [] and not out.exists()
