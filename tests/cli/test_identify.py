"""``cka-probe identify``: a run end to end, the config file, and each bad input as one line with exit code 2."""

from __future__ import annotations

import json
import re

import pytest
import timm.models
import torch
from click.testing import CliRunner
from torch import nn

from cka_probe.cli.main import main

from ..tiny_models import register_tiny


class _Net(nn.Module):
    def __init__(self, widths):
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 3, 2, 1), nn.ReLU()]
            channels = width
        self.features = nn.Sequential(*layers)

    def forward(self, x):
        return self.features(x).mean((2, 3))


def _register(name, widths):
    return register_tiny(name, lambda: _Net(widths))


SMALL = _register("identify_cli_small", (4, 6))
OTHER = _register("identify_cli_other", (5, 7))


def _save(path, name, seed):
    torch.manual_seed(seed)
    torch.save(timm.models.create_model(name).state_dict(), path)
    return str(path)


@pytest.fixture
def nets(tmp_path):
    return [_save(tmp_path / f"seed{s}.pth", SMALL, s) for s in range(3)]


def _run(*args):
    return CliRunner().invoke(main, ["identify", *args, "--data", "synthetic", "-n", "8", "--no-progress"])


def test_identify_writes_outputs_and_prints_the_summary(nets, tmp_path, one_thread):
    out = tmp_path / "out"
    result = _run(str(tmp_path / "seed*.pth"), "--model", SMALL, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert re.search(
        r"3 networks x 2 layers, n=8: mean \d+\.\d %, flatten \d+\.\d % of 12 layer matches", result.output
    )
    record = json.loads((out / "identify.json").read_text())
    assert [n["label"] for n in record["networks"]] == ["seed0.pth", "seed1.pth", "seed2.pth"]
    assert (out / "identify.csv").exists() and (out / "identify.png").exists()
    again = _run(*nets, "--model", SMALL, "--out", str(out))
    assert again.exit_code == 2 and "--overwrite" in again.output


def test_config_file_and_command_line_override(nets, tmp_path, one_thread):
    config = tmp_path / "identify.yaml"
    config.write_text(f"model: {SMALL}\ncheckpoints: {nets}\nanalysis: {{pools: [mean], precision: float64}}\n")
    result = CliRunner().invoke(
        main,
        [
            "identify",
            "--config",
            str(config),
            "--pool",
            "flatten",
            "--precision",
            "float32",
            "--data",
            "synthetic",
            "-n",
            "8",
            "--no-progress",
            "--out",
            str(tmp_path / "o"),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "flatten" in result.output and "mean" not in result.output.split("wrote")[0]
    assert json.loads((tmp_path / "o" / "identify.json").read_text())["precision"] == "float32"


def test_fewer_than_two_checkpoints(nets, tmp_path, assert_one_line_error):
    assert_one_line_error(_run(nets[0], "--model", SMALL, "--out", str(tmp_path)), "at least two checkpoints")


def test_checkpoints_of_different_architectures(nets, tmp_path, assert_one_line_error):
    other = _save(tmp_path / "other.pth", OTHER, 0)
    assert_one_line_error(
        _run(nets[0], other, "--model", SMALL, "--out", str(tmp_path / "o")), "does not fit", "identify_cli_small"
    )
    config = tmp_path / "mixed.yaml"
    config.write_text(
        f"checkpoints: [{{checkpoint: {nets[0]}, model: {SMALL}}}, {{checkpoint: {other}, model: {OTHER}}}]\n"
    )
    result = CliRunner().invoke(main, ["identify", "--config", str(config), "--out", str(tmp_path / "o")])
    assert_one_line_error(result, "different architectures", "identify_cli_other")


def test_unreadable_checkpoint(nets, tmp_path, assert_one_line_error):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"junk")  # too short for torch.load's legacy header: struct.error inside torch
    out = tmp_path / "o"
    assert_one_line_error(_run(nets[0], str(junk), "--model", SMALL, "--out", str(out)), "cannot read checkpoint")
    assert not out.exists()


def test_layer_lists_that_differ(nets, tmp_path, assert_one_line_error):
    config = tmp_path / "layers.yaml"
    config.write_text(
        f"model: {SMALL}\ncheckpoints: [{nets[0]}, {{checkpoint: {nets[1]}, layers: [features.1]}}]\n"
        "data: {source: synthetic, n: 8}\n"
    )
    result = CliRunner().invoke(
        main, ["identify", "--config", str(config), "--out", str(tmp_path / "o"), "--no-progress"]
    )
    assert_one_line_error(result, "layer lists differ between checkpoints", "--layers")


def test_missing_model_and_unknown_pooling(nets, tmp_path, assert_one_line_error):
    assert_one_line_error(_run(*nets, "--out", str(tmp_path)), "--model")
    assert_one_line_error(
        _run(*nets, "--model", SMALL, "--pool", "median", "--out", str(tmp_path)),
        "Invalid value for '--pool': 'median' is not one of 'mean', 'max', 'flatten'",
    )


def test_pool_is_a_fixed_choice_in_the_help():
    result = CliRunner().invoke(main, ["identify", "--help"])
    assert result.exit_code == 0
    assert "--pool [mean|max|flatten],..." in result.output


def test_set_overrides_the_config_file_and_options_win_over_set(nets, tmp_path, one_thread):
    config = tmp_path / "identify.yaml"
    config.write_text(f"model: {SMALL}\ncheckpoints: {nets}\ndata: {{source: synthetic, n: 8}}\n")
    args = ["identify", "--config", str(config), "--no-progress", "--set", "analysis.pools=[mean]"]
    result = CliRunner().invoke(main, [*args, "--set", "data.n=10", "--out", str(tmp_path / "o")])
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "identify.json").read_text())
    assert record["n"] == 10 and record["pools"] == ["mean"]
    result = CliRunner().invoke(main, [*args, "--set", "data.n=10", "-n", "9", "--out", str(tmp_path / "p")])
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "p" / "identify.json").read_text())["n"] == 9


def test_set_without_a_config_file_changes_the_options_defaults(nets, tmp_path, one_thread):
    result = CliRunner().invoke(
        main,
        ["identify", *nets, "--model", SMALL, "--data", "synthetic", "--no-progress"]
        + ["--set", "data.n=8", "--set", "analysis.pools=[flatten]", "--out", str(tmp_path / "o")],
    )
    assert result.exit_code == 0, result.output
    record = json.loads((tmp_path / "o" / "identify.json").read_text())
    assert record["n"] == 8 and record["pools"] == ["flatten"]


def test_set_of_an_unknown_key_and_no_checkpoints(nets, tmp_path, assert_one_line_error):
    result = _run(*nets, "--model", SMALL, "--set", "analysis.kernel=rbf", "--out", str(tmp_path / "o"))
    assert_one_line_error(result, "--set: unknown key 'analysis.kernel'")
    assert_one_line_error(_run("--model", SMALL, "--out", str(tmp_path / "o")), "got none", "--config FILE")
    assert not (tmp_path / "o").exists()


def test_float32_with_the_minibatch_estimator(nets, tmp_path, assert_one_line_error):
    result = _run(
        *nets,
        "--model",
        SMALL,
        "--precision",
        "float32",
        "--estimator",
        "minibatch",
        "--batch-size",
        "4",
        "--pool",
        "mean",
        "--out",
        str(tmp_path / "o"),
    )
    assert_one_line_error(result, "--precision float32 applies to the full estimator")
    assert not (tmp_path / "o").exists()


def test_layouts_and_checkpoint_key_reach_every_network(nets, tmp_path, one_thread, assert_one_line_error):
    # --layouts overrides a layer's layout for every network (recorded in the JSON; here the layout it would have
    # had, so the numbers are those without it); --checkpoint-key picks the weights of every checkpoint.
    plain = _run(*nets, "--model", SMALL, "--out", str(tmp_path / "plain"))
    given = _run(*nets, "--model", SMALL, "--layouts", "features.*=NCHW", "--out", str(tmp_path / "given"))
    assert plain.exit_code == 0 and given.exit_code == 0, given.output
    records = [json.loads((tmp_path / d / "identify.json").read_text()) for d in ("plain", "given")]
    assert records[0]["layouts"] == {} and records[1]["layouts"] == {"features.*": "NCHW"}
    assert records[0]["overall"] == records[1]["overall"]
    assert records[1]["checkpoint_select"] == "auto"
    out = tmp_path / "o"
    assert_one_line_error(
        _run(*nets, "--model", SMALL, "--layouts", "nomatch*=NCHW", "--out", str(out)), "--layouts", "nomatch*"
    )
    assert_one_line_error(_run(*nets, "--model", SMALL, "--layouts", "features.1", "--out", str(out)), "--layouts")
    assert_one_line_error(_run(*nets, "--model", SMALL, "--checkpoint-key", "ema", "--out", str(out)), "no EMA weights")
    config = tmp_path / "ema.yaml"
    config.write_text(
        f"model: {SMALL}\ncheckpoints: [{nets[0]}, {nets[1]}]\ndata: {{source: synthetic, n: 8}}\n"
        "analysis: {checkpoint_key: ema, layouts: {'features.*': NCHW}}\n"
    )
    result = CliRunner().invoke(main, ["identify", "--config", str(config), "--out", str(out), "--no-progress"])
    assert_one_line_error(result, "no EMA weights")  # the file's checkpoint_key reached the loader
    assert not out.exists()
