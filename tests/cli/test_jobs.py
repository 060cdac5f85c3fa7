"""The figure and zoo commands through click's CliRunner."""

from __future__ import annotations

import json

import yaml
from click.testing import CliRunner

from cka_probe.cli.main import main

FIGURE = {
    "title": "test grid",
    "weights": "random",
    "data": {"source": "embedded", "n": 8},
    "models": [{"name": "test_resnet", "label": "R"}, {"name": "test_vit", "label": "V"}],
    "panels": [[["R", "R"], ["V", "V"]], [["R", "V"], None]],
    "output": {"name": "grid", "formats": ["png"]},
}
ZOO = {
    "weights": "random",
    "data": {"source": "embedded", "n": 8},
    "models": ["test_resnet", "test_vit", "test_convnext"],
    "output": {"per_pair": True},
}


def write(tmp_path, name, content):
    path = tmp_path / name
    path.write_text(yaml.safe_dump(content))
    return str(path)


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_figure_writes_the_grid_and_its_tables(tmp_path):
    config = write(tmp_path, "fig.yaml", FIGURE)
    result = run("figure", config, "--out", str(tmp_path / "out"), "--no-progress")
    assert result.exit_code == 0, result.output
    assert "3 panels over 2 models" in result.output
    assert (tmp_path / "out" / "grid.png").read_bytes()[:4] == b"\x89PNG"
    meta = json.loads((tmp_path / "out" / "grid.json").read_text())
    assert meta["panels"] == [[["R", "R"], ["V", "V"]], [["R", "V"], None]] and meta["n"] == 8
    again = run("figure", config, "--out", str(tmp_path / "out"), "--no-progress", "--set", "data.n=10")
    assert again.exit_code == 2 and "exists already" in again.output


def test_figure_config_errors(tmp_path, assert_one_line_error):
    config = write(tmp_path, "fig.yaml", {**FIGURE, "panel": []})
    assert_one_line_error(run("figure", config, "--out", str(tmp_path / "out")), "unknown key 'panel'", "panels")
    config = write(tmp_path, "fig2.yaml", FIGURE)
    assert_one_line_error(run("figure", config, "--set", "data.num=3"), "unknown key 'data.num'", "valid keys of data")
    assert_one_line_error(run("figure", config, "--set", "nonsense"), "write it as key=value")


def test_zoo_runs_resumes_and_reports(tmp_path):
    config = write(tmp_path, "zoo.yaml", ZOO)
    out = str(tmp_path / "zoo")
    first = run("zoo", config, "--out", out, "--no-progress", "--permutations", "10")
    assert first.exit_code == 0, first.output
    assert "3 models (0 from the cache), 3 pairs" in first.output
    second = run("zoo", config, "--out", out, "--no-progress", "--permutations", "10")
    assert second.exit_code == 0 and "nothing recomputed" in second.output
    long = (tmp_path / "zoo" / "pairs_long.csv").read_text().splitlines()[0]
    assert long.endswith("cka,p_value")


def test_zoo_errors(tmp_path, assert_one_line_error):
    config = write(tmp_path, "zoo.yaml", {**ZOO, "output": {"per_pair": True, "colour": "red"}})
    assert_one_line_error(run("zoo", config), "unknown key 'output.colour'", "per_pair")
    good = write(tmp_path, "good.yaml", ZOO)
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert_one_line_error(run("zoo", good, "--out", str(blocker / "zoo")), "cannot write")
    assert run("zoo", good, "--out", str(tmp_path / "z"), "--no-progress").exit_code == 0
    assert_one_line_error(run("zoo", good, "--out", str(tmp_path / "z"), "--set", "data.n=10"), "another configuration")
    assert_one_line_error(run("zoo", str(tmp_path / "missing.yaml")), "does not exist")


def test_zoo_unreachable_ray_cluster(tmp_path, assert_one_line_error):
    import pytest

    pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]")')
    good = write(tmp_path, "good.yaml", ZOO)
    result = run("zoo", good, "--out", str(tmp_path / "r"), "--executor", "ray", "--address", "127.0.0.1:9")
    assert_one_line_error(result, "127.0.0.1:9")


def test_unwritable_cache_directory_fails_before_any_model_runs(tmp_path, assert_one_line_error):
    blocker = tmp_path / "file"
    blocker.write_text("")
    result = run(
        "compare",
        "test_resnet",
        "test_vit",
        "--weights",
        "random",
        "-n",
        "8",
        "--out",
        str(tmp_path / "o"),
        "--cache-dir",
        str(blocker / "cache"),
    )
    assert_one_line_error(result, "feature cache directory", "--no-cache")
    config = write(tmp_path, "zoo.yaml", ZOO)
    assert_one_line_error(
        run("zoo", config, "--out", str(tmp_path / "z"), "--cache-dir", str(blocker / "c")), "feature cache directory"
    )
