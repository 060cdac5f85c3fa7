"""compare and figure killed (SIGKILL) between two of their output files: a rerun with the same settings completes
the set without ``--overwrite``; a complete set is still refused."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest
import yaml
from click.testing import CliRunner

from cka_probe.cli.main import main

# Runs the command line in a child process whose first rename into the output folder is followed by a pause,
# so that the test can SIGKILL it right after its first output file appears.
_PAUSING_CLI = """
import os, sys, time
out, real = os.path.realpath(sys.argv[1]), os.replace

def pausing(src, dst, *args, **kwargs):
    real(src, dst, *args, **kwargs)
    if os.path.dirname(os.path.realpath(dst)) == out:
        print("renamed", os.path.basename(dst), flush=True)
        time.sleep(600)

os.replace = pausing
from cka_probe.cli.main import main
main(sys.argv[2:], prog_name="cka-probe")
"""


def _killed_after_first_output(out, args, env):
    proc = subprocess.Popen(
        [sys.executable, "-c", _PAUSING_CLI, str(out), *map(str, args)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        line = proc.stdout.readline().strip()
        assert line.startswith("renamed "), f"the command ended before writing an output ({proc.wait()})"
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    return line.removeprefix("renamed ")


def _env(tmp_path):
    return {**os.environ, "CKA_PROBE_CACHE": str(tmp_path / "cache")}


def _invoke(args, tmp_path):
    return CliRunner().invoke(main, [str(a) for a in args], env={"CKA_PROBE_CACHE": str(tmp_path / "cache")})


COMPARE = ["compare", "test_resnet", "test_vit", "--weights", "random", "-n", "8", "--device", "cpu", "--no-progress"]


@pytest.mark.parametrize(
    ("command", "outputs"),
    [
        ("compare", ["test_resnet_vs_test_vit.png", "test_resnet_vs_test_vit.csv", "test_resnet_vs_test_vit.json"]),
        ("figure", ["grid.png", "grid_panels.csv", "grid_layers.csv", "grid.json"]),
    ],
)
def test_a_rerun_completes_outputs_that_a_kill_left_incomplete(tmp_path, command, outputs):
    if command == "compare":
        args = lambda out: [*COMPARE, "--out", out]  # noqa: E731
    else:
        config = tmp_path / "grid.yaml"
        config.write_text(
            yaml.safe_dump(
                {
                    "weights": "random",
                    "data": {"n": 8},
                    "models": ["test_resnet", "test_vit"],
                    "panels": [[["test_resnet", "test_vit"]]],
                    "output": {"formats": ["png"], "name": "grid"},
                    "analysis": {"device": "cpu"},
                }
            )
        )
        args = lambda out: ["figure", config, "--out", out, "--no-progress"]  # noqa: E731
    reference = tmp_path / "reference"
    assert _invoke(args(reference), tmp_path).exit_code == 0
    out = tmp_path / "out"

    first = _killed_after_first_output(out, args(out), _env(tmp_path))
    present = sorted(p.name for p in out.iterdir() if not p.name.startswith("."))
    assert present == [first] and first != outputs[-1]  # one file of the set, its JSON record not yet

    result = _invoke(args(out), tmp_path)  # the same settings, no --overwrite
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) == sorted(outputs)
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]  # the killed writer's temporary files went
    assert (out / outputs[1]).read_bytes() == (reference / outputs[1]).read_bytes()  # the numbers

    again = _invoke(args(out), tmp_path)  # a complete set is refused as before
    assert again.exit_code == 2 and "exists already" in again.output and "--overwrite" in again.output


def test_an_empty_format_is_one_line(tmp_path, assert_one_line_error):
    out = tmp_path / "out"
    result = _invoke([*COMPARE, "--out", out, "--format", ""], tmp_path)
    assert_one_line_error(result, "--format '' names no figure format", "png")
    assert not out.exists()
