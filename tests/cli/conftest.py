"""Helpers shared by the command-line tests."""

from __future__ import annotations

import pytest


def _assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


@pytest.fixture
def assert_one_line_error():
    """Check that a CliRunner result is exit code 2 and one ``Error:`` line holding every fragment."""
    return _assert_one_line_error
