"""Timings go stale: the math and the Gram of flattened layers say what a choice buys and point to
``benchmarks/README.md``, where ``bench_gram_kernels.py`` re-measures it; their text carries no times or speed-ups."""

from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMING = re.compile(
    r"\d+(\.\d+)?\s?(µs|us|ms|s|seconds?)\b(?!\s*=)"  # "31 us", "0.1 s"
    r"|\d+(\.\d+)?(-\d+(\.\d+)?)?\s?[x×]\s+(faster|slower|the rate)"  # "1.6x faster", "1.2-1.6x the rate"
    r"|\d+(\.\d+)?\s?%\s+(faster|slower)"  # "6 % slower"
)


def timings(source: str) -> list[str]:
    """Each comment or string of ``source`` (docstrings included) that states a time or a speed-up."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type in (tokenize.COMMENT, tokenize.STRING) and TIMING.search(token.string):
            found.append(f"line {token.start[0]}: {TIMING.search(token.string).group(0)}")
    return found


def test_the_check_finds_times_and_speed_ups():
    source = (
        '"""Costs 31 us a layer, 0.1 s once."""\n'
        "# measured 1.6x faster than torch\n"
        "x = 1  # 6 % slower at 1024\n"
        'y = "the 2 seconds"\n'
        'z = "float64 (8 MiB), 4096 columns, n = 128"\n'
    )
    assert [f.split(":")[0] for f in timings(source)] == ["line 1", "line 2", "line 3", "line 4"]


@pytest.mark.parametrize(
    "path",
    sorted(str(p.relative_to(ROOT)) for p in (ROOT / "cka_probe" / "math").glob("*.py"))
    + ["cka_probe/capture/pooling.py"],
)
def test_math_and_flattened_gram_text_states_no_timings(path):
    assert timings((ROOT / path).read_text()) == [], "move these to benchmarks/README.md"
