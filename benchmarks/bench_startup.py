"""Start-up cost of the command line: ``--help``, ``--version`` and one-line errors, next to ``import torch``.

Every command runs as a fresh process (what a user waits for), rounds interleaved, the best of each
kept. The target: each costs at most ``python -c "import torch"`` plus 0.3 s. Errors that need a
model's registry (an unknown model name) load timm by necessity and are reported beside, not held
to that target.

    python benchmarks/bench_startup.py --rounds 5
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PYTHON = sys.executable
CLI = [PYTHON, "-m", "cka_probe"]


def commands(tmp: Path) -> dict[str, list[str]]:
    config = tmp / "fig.yaml"
    config.write_text("models: [test_resnet, test_vit]\npanels: [[[test_resnet, test_vit]]]\ndata: {n: 8, seed: -1}\n")
    return {
        "python -c 'import torch'": [PYTHON, "-c", "import torch"],
        "cka-probe --help": [*CLI, "--help"],
        "cka-probe --version": [*CLI, "--version"],
        "compare --help": [*CLI, "compare", "--help"],
        "error: compare --seed -1": [*CLI, "compare", "a", "b", "--seed", "-1"],
        "error: compare --device gpu": [*CLI, "compare", "a", "b", "--device", "gpu"],
        "error: figure config data.seed -1": [*CLI, "figure", str(config)],
        "error: compare --format gif": [*CLI, "compare", "a", "b", "--format", "gif", "--out", str(tmp / "o")],
        "error: unknown model (loads timm)": [
            *CLI,
            "compare",
            "no_such_net",
            "test_vit",
            "--weights",
            "random",
            "--out",
            str(tmp / "o"),
        ],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    env = {**os.environ, "CKA_PROBE_CACHE": tempfile.mkdtemp()}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(Path(tmp))
        best = {name: float("inf") for name in cmds}
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                start = time.perf_counter()
                subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
                best[name] = min(best[name], time.perf_counter() - start)
    torch_time = best["python -c 'import torch'"]
    print(f"{'command':<36} {'best s':>8} {'- import torch':>15}  target (<= +0.30 s)")
    for name, seconds in best.items():
        extra = seconds - torch_time
        verdict = "" if name.startswith("python") else ("met" if extra <= 0.3 else "over")
        if "loads timm" in name:
            verdict = "(needs timm)"
        print(f"{name:<36} {seconds:8.2f} {extra:+15.2f}  {verdict}")


if __name__ == "__main__":
    main()
