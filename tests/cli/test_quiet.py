"""Failures that end quietly and say what happened: a closed pipe, a pattern that matches nothing, ``--set``
on a list item."""

from __future__ import annotations

import os
import subprocess
import sys

import yaml
from click.testing import CliRunner

from cka_probe.cli.main import main
from cka_probe.jobs.config import load_job_config


def _run(args, tmp_path):
    return CliRunner().invoke(main, [str(a) for a in args], env={"CKA_PROBE_CACHE": str(tmp_path / "cache")})


def test_a_reader_that_stops_early_ends_the_listing_quietly(tmp_path):
    """``cka-probe models | head``: the reader closes the pipe; no ``Error:`` line, no traceback."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "cka_probe", "models"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env={**os.environ, "CKA_PROBE_CACHE": str(tmp_path / "cache")},
    )
    proc.stdout.close()  # before the command writes its first line: every write meets a closed pipe
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 1
    assert stderr == ""


def test_a_pattern_that_matches_no_model_says_so_and_fails(tmp_path, assert_one_line_error):
    result = _run(["models", "nonexist*"], tmp_path)
    assert_one_line_error(result, "no model name matches 'nonexist*'", "cka-probe models")


def test_a_pattern_that_matches_lists_the_names(tmp_path):
    result = _run(["models", "test_vit*"], tmp_path)
    assert result.exit_code == 0, result.output
    assert "test_vit" in result.output.split()


def _zoo_file(tmp_path):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump({"weights": "random", "data": {"n": 8}, "models": ["test_resnet", "test_vit"]}))
    return path


def test_set_names_a_list_item_by_its_index(tmp_path):
    config = load_job_config(
        _zoo_file(tmp_path), "zoo", ["models.0.name=test_convnext", "models.1.label=V", "data.n=6"]
    )
    assert [m.name for m in config.models] == ["test_convnext", "test_vit"]
    assert [m.display for m in config.models] == ["test_convnext", "V"]
    assert config.data.n == 6


def test_set_replaces_a_whole_list_item(tmp_path):
    config = load_job_config(_zoo_file(tmp_path), "zoo", ["models.1=test_convnext"])
    assert [m.name for m in config.models] == ["test_resnet", "test_convnext"]


def test_set_on_a_list_item_that_is_not_there_is_one_line(tmp_path, assert_one_line_error):
    out = tmp_path / "out"
    result = _run(["zoo", _zoo_file(tmp_path), "--out", out, "--set", "models.5.name=test_vit"], tmp_path)
    assert_one_line_error(result, "--set models.5.name: models has 2 items (numbered from 0)", "in the file")
    assert not out.exists()


def test_set_on_a_list_without_an_index_is_one_line(tmp_path, assert_one_line_error):
    result = _run(["zoo", _zoo_file(tmp_path), "--out", tmp_path / "out", "--set", "models.name=x"], tmp_path)
    assert_one_line_error(result, "models is a list; name its item by number, e.g. models.0.name")


def test_set_with_a_list_index_is_not_called_malformed(tmp_path, assert_one_line_error):
    """``--set models.0.name=resnet81`` reaches the config: the unknown name is what the error is about."""
    result = _run(["zoo", _zoo_file(tmp_path), "--out", tmp_path / "out", "--set", "models.0.name=["], tmp_path)
    assert_one_line_error(result, "--set 'models.0.name=[': the value is not valid YAML")
    assert "write it as key=value" not in result.output


def test_identify_with_an_empty_pool_is_one_line(tmp_path, assert_one_line_error):
    nets = [tmp_path / "seed0.pth", tmp_path / "seed1.pth"]
    out = tmp_path / "out"
    result = _run(["identify", *nets, "--model", "test_resnet", "--pool", "", "--out", out], tmp_path)
    assert_one_line_error(
        result, "Invalid value for '--pool': '' names no pooling; give one or more of mean, max, flatten"
    )
    assert "none" not in result.output
    result = _run(["identify", *nets, "--model", "test_resnet", "--pool", "mean,median", "--out", out], tmp_path)
    assert_one_line_error(result, "Invalid value for '--pool': 'median' is not one of 'mean', 'max', 'flatten'")
    assert not out.exists()


def test_identify_in_python_names_its_argument():
    import pytest

    from cka_probe.errors import IdentifyError
    from cka_probe.jobs.identify import identify

    with pytest.raises(IdentifyError, match=r"^pools= names no pooling; give one or more of mean, max, flatten$"):
        identify("test_resnet", ["a.pth", "b.pth"], pools=())


def test_a_one_model_zoo_is_refused_before_any_model_runs(tmp_path, assert_one_line_error):
    path = tmp_path / "zoo.yaml"
    path.write_text(yaml.safe_dump({"weights": "random", "data": {"n": 8}, "models": ["test_resnet"]}))
    out = tmp_path / "out"
    result = _run(["zoo", path, "--out", out, "--no-progress"], tmp_path)
    assert_one_line_error(result, "models lists 1 model, and a zoo compares pairs; list at least two")
    assert "?" not in result.output and "no model" not in result.output
    assert not out.exists() and not (tmp_path / "cache").exists()  # nothing was computed


def _recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    run = tmp_path / "run"
    path.write_text(
        yaml.safe_dump(
            {"method": "scratch", "student": "test_resnet", "dataset": "fashion_mnist", "output_dir": str(run)}
        )
    )
    return path, run


def test_a_resume_checkpoint_that_is_not_there_names_the_option(tmp_path, assert_one_line_error):
    recipe, run = _recipe(tmp_path)
    missing = tmp_path / "none.pth"
    result = _run(["train", "--config", recipe, "--resume", missing, "--no-progress"], tmp_path)
    assert_one_line_error(result, f"--resume {missing}: no such checkpoint file", "--resume alone")
    assert not run.exists()


def test_resume_without_a_run_to_continue_names_the_option(tmp_path, assert_one_line_error):
    recipe, run = _recipe(tmp_path)
    result = _run(["train", "--config", recipe, "--resume", "--no-progress"], tmp_path)
    assert_one_line_error(result, f"--resume: {run} holds no last.pth to continue from; drop --resume")
    assert not run.exists()
