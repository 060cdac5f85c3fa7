"""Figure 6 of the OFA-KD supplementary on networks trained here, offline: from nothing to the grid in one command.

Trains small members of Figure 6's three families on Fashion-MNIST (``configs/train/``: MobileNetV2 at width
0.5, a 6-block ViT-S, a 6-block Mixer), two seeds each, with ``cka-probe train``; keeps each run's weights at
initialisation beside it (``init.pth``); evaluates every trained network on the 10,000 test images
(``cka-probe validate``'s function); then draws, with ``cka-probe figure``, the Figure 6 grid of the trained
networks beside the same grid at initialisation, and scores every pair with ``cka-probe zoo`` (diagonal-band
CKA and depth correspondence, with bootstrap intervals over the probe images). The numbers and the figure go
into ``docs/figure6_trained.md`` (between the ``figure6-trained`` markers) and ``figures/``.

Grid (rows): each network against itself (the paper's first row); the two seeds of one architecture; the
heterogeneous pairs; the same pairs with the axes swapped. Columns: the three families trained, then the same
three at initialisation.

Runs are reused: a finished run is skipped, an interrupted one resumes from ``last.pth``.

Usage::

    python scripts/figure6_trained.py            # the whole thing (27.6 min measured on 2 idle CPU cores)
    python scripts/figure6_trained.py --smoke    # every step on a few batches (CI; under 2 min)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
ARCHS = {  # key: (recipe, label)
    "mobilenetv2": ("configs/train/fmnist_mobilenetv2.yaml", "MobileNetV2"),
    "vit_s": ("configs/train/fmnist_vit_s.yaml", "ViT-S"),
    "mixer_b16": ("configs/train/fmnist_mixer_b16.yaml", "Mixer-B/16"),
}
SEEDS = (0, 1)
FULL = {"overrides": [], "n": 128, "bootstrap": 1000, "test_images": 10_000}  # the whole test split
SMOKE = {
    "overrides": ["epochs=1", "train_samples=256", "val_samples=128", "limit_train_batches=2", "limit_val_batches=1"],
    "n": 32,
    "bootstrap": 20,
    "test_images": 256,
}
MARK_BEGIN, MARK_END = "<!-- figure6-trained:begin -->", "<!-- figure6-trained:end -->"


def run_dir(out: Path, arch: str, seed: int) -> Path:
    return out / "runs" / f"{arch}-s{seed}"


def cli(*args: str, threads: int | None = None) -> None:
    """Run ``cka-probe ARGS`` as a user would; stop on failure with its output."""
    env = dict(os.environ)
    if threads is not None:
        env["OMP_NUM_THREADS"] = str(threads)
    command = [sys.executable, "-m", "cka_probe", *args]
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(
            f"{' '.join(command[2:])} failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-4000:]}"
        )


def metrics(path: Path) -> list[dict[str, Any]]:
    file = path / "metrics.jsonl"
    return [json.loads(line) for line in file.read_text().splitlines() if line.strip()] if file.exists() else []


def train(out: Path, arch: str, seed: int, overrides: list[str]) -> dict[str, Any]:
    """``init.pth`` (the run's weights before its first step), then ``cka-probe train`` unless the run is done."""
    from cka_probe.ofa.config import load_config

    recipe, _ = ARCHS[arch]
    folder = run_dir(out, arch, seed)
    settings = [f"seed={seed}", f"output_dir={folder}", *overrides]
    config = load_config(REPO / recipe, settings)
    history = metrics(folder)
    if history and history[-1]["epoch"] >= config.epochs and (folder / "best.pth").exists():
        return {"arch": arch, "seed": seed, "history": history, "skipped": True}
    if not (folder / "init.pth").exists():
        write_init(config, folder / "init.pth")
    args = ["train", "--config", recipe, *(x for s in settings for x in ("--set", s))]
    args += ["--resume"] if (folder / "last.pth").exists() else ["--overwrite"]
    started = time.perf_counter()
    cli(*args, threads=1)
    return {"arch": arch, "seed": seed, "history": metrics(folder), "skipped": False,
            "seconds": time.perf_counter() - started}  # fmt: skip


def write_init(config, path: Path) -> None:
    """The run's own checkpoint before any step: the trainer built with the run's seed, saved unchanged."""
    import torch

    from cka_probe.ofa.trainer import Trainer

    with torch.random.fork_rng():
        trainer = Trainer(config.replace(output_dir=str(path.parent / ".init")), overwrite=True)
        path.parent.mkdir(parents=True, exist_ok=True)
        trainer.save(path)


def evaluate(out: Path, test_images: int | None) -> dict[str, float]:
    """Test top-1 (%) of every trained network's ``best.pth`` on the Fashion-MNIST test split."""
    from cka_probe.ofa.validate import validate_checkpoint

    accuracy = {}
    for arch in ARCHS:
        for seed in SEEDS:
            result = validate_checkpoint(
                run_dir(out, arch, seed) / "best.pth", samples=test_images, workers=0
            )  # else the run's own val_samples
            accuracy[f"{arch}-s{seed}"] = float(result["top1"])
    return accuracy


def models(out: Path) -> list[dict[str, str]]:
    entries = []
    for state, file in (("trained", "best.pth"), ("init", "init.pth")):
        for arch, (_, label) in ARCHS.items():
            for seed in SEEDS:
                suffix = "" if state == "trained" else " init"
                entries.append({"name": str(run_dir(out, arch, seed) / file), "label": f"{label} s{seed}{suffix}"})
    return entries


def grid(state: str) -> list[list[list[str]]]:
    """The four rows of the grid for ``trained`` or ``init`` networks (three columns)."""
    suffix = "" if state == "trained" else " init"
    label = {arch: ARCHS[arch][1] for arch in ARCHS}
    a, b, c = (f"{label[k]} s0{suffix}" for k in ARCHS)
    a1, b1, c1 = (f"{label[k]} s1{suffix}" for k in ARCHS)
    return [
        [[a, a], [b, b], [c, c]],
        [[a, a1], [b, b1], [c, c1]],
        [[a, b], [a, c], [b, c]],
        [[b, a], [c, a], [c, b]],
    ]


def write_jobs(out: Path, scale: dict[str, Any]) -> tuple[Path, Path]:
    import yaml

    data = {"source": "fashion-mnist", "n": scale["n"], "seed": 0}
    analysis = {"kernel": "linear", "tokens": "patch", "layers": "activations"}
    trained, init = grid("trained"), grid("init")
    figure = {
        "title": "CKA of post-activation features, Fashion-MNIST: trained here (left), at initialisation (right)",
        "data": data,
        "analysis": analysis,
        "models": models(out),
        "panels": [t + i for t, i in zip(trained, init)],
        "output": {"dir": str(out), "name": "figure6_trained", "formats": ["png"], "labels": "auto"},
    }
    zoo = {
        "data": data,
        "analysis": {**analysis, "bootstrap": scale["bootstrap"], "stats_seed": 0},
        "models": models(out),
        "output": {"dir": str(out / "zoo"), "per_pair": False, "formats": ["png"]},
    }
    paths = out / "figure6_trained.yaml", out / "zoo.yaml"
    for path, job in zip(paths, (figure, zoo)):
        path.write_text(yaml.safe_dump(job, sort_keys=False))
    return paths


def pair_scores(out: Path) -> list[dict[str, Any]]:
    import pandas as pd

    summary = pd.read_csv(out / "zoo" / "pairs_summary.csv")
    return summary.to_dict("records")


def score_tables(scores: list[dict[str, Any]]) -> str:
    """Per pair kind: trained and initial scores, each seed combination with its interval, and their spread."""
    by_pair = {(row["model_a"], row["model_b"]): row for row in scores}
    labels = {arch: ARCHS[arch][1] for arch in ARCHS}
    kinds = [(f"{labels[x]}, seed 0 vs seed 1", x, x, "seeds") for x in ARCHS]
    keys = list(ARCHS)
    kinds += [(f"{labels[x]} vs {labels[y]}", x, y, "cross") for i, x in enumerate(keys) for y in keys[i + 1 :]]

    def combos(x: str, y: str, kind: str, suffix: str) -> list[tuple[str, str]]:
        if kind == "seeds":
            return [(f"{labels[x]} s0{suffix}", f"{labels[x]} s1{suffix}")]
        return [(f"{labels[x]} s{s}{suffix}", f"{labels[y]} s{t}{suffix}") for s in SEEDS for t in SEEDS]

    lines = []
    for score, title in (("diagonal_band_cka", "Diagonal-band CKA"), ("depth_correspondence", "Depth correspondence")):
        lines += [f"**{title}** (95 % bootstrap interval over the probe images in brackets; mean ± std over the "
                  "seed combinations)", "", "| pair | trained | at initialisation |", "|---|---|---|"]  # fmt: skip
        for name, x, y, kind in kinds:
            cells = []
            for suffix in ("", " init"):
                rows = [by_pair[p] for p in combos(x, y, kind, suffix) if p in by_pair]
                values = [row[score] for row in rows]
                each = "; ".join(
                    f"{row[score]:.3f} [{row[score + '_low']:.3f}, {row[score + '_high']:.3f}]" for row in rows
                )
                spread = f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f}: " if len(values) > 1 else ""
                cells.append(spread + each)
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
        lines.append("")
    return "\n".join(lines)


def accuracy_table(accuracy: dict[str, float], history: dict[str, list]) -> str:
    lines = ["| network | epochs | test top-1, seed 0 | test top-1, seed 1 |", "|---|---:|---:|---:|"]
    for arch, (_, label) in ARCHS.items():
        epochs = history[f"{arch}-s0"][-1]["epoch"] if history.get(f"{arch}-s0") else "?"
        lines.append(f"| {label} | {epochs} | {accuracy[f'{arch}-s0']:.2f} % | {accuracy[f'{arch}-s1']:.2f} % |")
    return "\n".join(lines)


def update_docs(doc: Path, body: str) -> None:
    text = doc.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise SystemExit(f"{doc} has no {MARK_BEGIN} ... {MARK_END} section to fill")
    head, rest = text.split(MARK_BEGIN, 1)
    doc.write_text(f"{head}{MARK_BEGIN}\n{body}\n{MARK_END}{rest.split(MARK_END, 1)[1]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="every step on a few batches; no docs or figures/ update")
    parser.add_argument("--out", type=Path, default=None, help="working folder [default: runs/figure6_trained]")
    parser.add_argument("--workers", type=int, default=2, help="training runs at a time (one thread each)")
    args = parser.parse_args(argv)
    scale = SMOKE if args.smoke else FULL
    out = (args.out or REPO / "runs" / ("figure6_trained_smoke" if args.smoke else "figure6_trained")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        jobs = [pool.submit(train, out, arch, seed, scale["overrides"]) for arch in ARCHS for seed in SEEDS]
        runs = [job.result() for job in jobs]
    history = {f"{run['arch']}-s{run['seed']}": run["history"] for run in runs}
    train_seconds = time.perf_counter() - started
    print(f"[{train_seconds:7.1f}s] trained {sum(not r['skipped'] for r in runs)} runs", flush=True)

    accuracy = evaluate(out, scale["test_images"])
    for name, top1 in accuracy.items():
        print(f"  {name}: test top-1 {top1:.2f}%", flush=True)
    figure_job, zoo_job = write_jobs(out, scale)
    cli("figure", str(figure_job), "--overwrite")
    cli("zoo", str(zoo_job), "--overwrite")
    scores = pair_scores(out)
    total = time.perf_counter() - started
    print(f"[{total:7.1f}s] figure and scores in {out}", flush=True)

    import torch

    provenance = {
        "data": "Fashion-MNIST (dataset-fashion-mnist IDX files); probe: class-balanced test images",
        "probe_images": scale["n"], "bootstrap": scale["bootstrap"], "seeds": list(SEEDS),
        "recipes": {arch: recipe for arch, (recipe, _) in ARCHS.items()}, "overrides": scale["overrides"],
        "seconds": {"train": round(train_seconds), "total": round(total)}, "cpu_cores": os.cpu_count(),
        "versions": {"torch": torch.__version__, "python": platform.python_version()},
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps({"accuracy": accuracy, "scores": scores, **provenance}, indent=1))
    body = "\n\n".join(
        [accuracy_table(accuracy, history), score_tables(scores), f"Provenance: {json.dumps(provenance)}"]
    )
    if args.smoke:
        print(body)
        return 0
    image = REPO / "figures" / "figure6_trained-fashion-mnist.png"
    image.write_bytes((out / "figure6_trained.png").read_bytes())
    update_docs(REPO / "docs" / "figure6_trained.md", body)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
