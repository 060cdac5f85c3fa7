"""The project's own promises: the README's set-up commands and the CI script agree."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _readme_commands() -> list[str]:
    return re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)[:2]


def test_readme_opens_with_the_two_set_up_commands():
    text = (ROOT / "README.md").read_text()
    first_block = text.index("```bash")
    assert text[:first_block].strip() == "# cka-probe"
    install_and_run, run_tests = _readme_commands()
    assert "cka-probe compare mobilenetv2 vit_s" in install_and_run
    assert run_tests.endswith("python -m pytest")


def test_ci_runs_the_readmes_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    run_tests = _readme_commands()[1]
    for step in run_tests.split(" && "):
        words = [w for w in step.split() if w not in ("-y", "-q")]
        assert any(all(w in line for w in words) for line in ci.splitlines()), step


def test_readme_has_no_unfilled_placeholders():
    assert "PERFORMANCE_TABLE" not in (ROOT / "README.md").read_text()


def _cpu_route() -> str:
    blocks = re.findall(r"```bash\n(.+?)\n```", (ROOT / "README.md").read_text(), flags=re.S)
    routes = [b for b in blocks if "download.pytorch.org/whl/cpu" in b]
    assert len(routes) == 1, "the README gives one CPU-only set-up command, in a block of its own"
    return routes[0]


def test_the_cpu_route_is_one_complete_command():
    """Pasted as is, it creates the environment, installs the CPU wheels and the package with the extras, and
    stops at the first failing step (an unreachable PyTorch index must not fall through to CUDA wheels)."""
    route = _cpu_route()
    assert "\n" not in route
    steps = route.split(" && ")
    assert steps[0] == "python3 -m venv .venv"
    assert "--index-url https://download.pytorch.org/whl/cpu" in steps[1]
    assert steps[2] == '.venv/bin/pip install -e ".[dev,ray]"'
    pins = re.findall(r"torch(?:vision)?==[\d.]+", _readme_commands()[0])
    assert pins and all(pin in steps[1] for pin in pins)  # the versions of the set-up commands
    assert not any(";" in step or "||" in step for step in steps)


def test_the_readme_says_when_the_cpu_route_applies():
    text = " ".join((ROOT / "README.md").read_text().split())
    assert "It applies only where that index can be reached." in text
    assert "use the two commands at the top instead" in text
