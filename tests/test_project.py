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
