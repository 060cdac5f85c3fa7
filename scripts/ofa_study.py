"""Validation study of the OFA module on Fashion-MNIST: scratch / KD / FitNet / OFA students of two heterogeneous pairs.

Pairs (small timm configurations, 28 x 28 inputs, sized for a 2-core CPU):

* ``cnn_to_vit``: a ResNet-18 teacher, a 4-block ViT student (patch 4, width 64);
* ``vit_to_cnn``: a 6-block ViT-S teacher (patch 7, width 96, 3 heads: ``configs/train/fmnist_vit_s.yaml``'s
  network and recipe), timm's ``test_resnet`` student.

The paper's premise is a teacher stronger than its students (B.2 builds Swin-Nano/Pico for it), so each teacher
is trained first, from scratch, on more images than the students see (``TEACHER_RECIPES``: the ResNet-18 on
24,000 images, the ViT-S on all 60,000 with Figure 6's recipe, which a ViT needs on small grayscale images); then every student is
trained with each method and each seed on the same fixed 4,000-image subset, and measures the linear CKA of its
four stages and final features to the teacher's on 128 class-balanced validation images after every epoch
(``cka_every``; scratch students get the teacher for this measurement only). Afterwards the script evaluates
every model on the full test split (10,000 images), checks the precondition (each teacher against every
from-scratch student of its pair, seed by seed), computes CKA of every student against its teacher with
cka-probe's own engine (:class:`cka_probe.FeatureRecorder` on the activation layers, mean-pooled, then
:func:`cka_probe.cka_matrix`; the last-layer CKA of every seed, the heatmaps of seed 0), and writes the
tables (mean +- std over seeds, per seed in brackets) into ``docs/ofa.md`` between the ``ofa-study`` markers,
the figures beside it (heatmaps; CKA to the teacher during training, per pair, seed 0 of each method side by
side), and everything with its provenance to ``OUT/results.json``.

Runs are resumable: a finished run is skipped, an interrupted one resumes from its last checkpoint.

Usage::

    python scripts/ofa_study.py                  # the full study, 3 seeds (19.8 min measured on 2 idle cores)
    python scripts/ofa_study.py --smoke          # 1 epoch of a few batches per run; projects the full run's time
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import re
import statistics
import sys
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from cka_probe.ofa.config import load_config

REPO = Path(__file__).resolve().parents[1]
METHODS = ("scratch", "kd", "fitnet", "ofa")
SEEDS = (0, 1, 2)
IMG_SIZE = 28  # 49 patch tokens at patch 4 (64 at 32 x 32): Fashion-MNIST's own size, and cheaper
FASHION_MNIST_TRAIN = 60000

# The ViT-S teacher is Figure 6's Fashion-MNIST ViT-S: its network and its recipe come from that one file.
VIT_S_RECIPE_FILE = "configs/train/fmnist_vit_s.yaml"
VIT_S_RECIPE = load_config(REPO / VIT_S_RECIPE_FILE)

# name -> (timm model, kwargs, label for tables and figure titles)
MODELS = {
    "resnet18": ("resnet18", {}, "ResNet-18"),
    "vit_student": (
        "vit_tiny_patch16_224",
        {"img_size": IMG_SIZE, "patch_size": 4, "depth": 4, "embed_dim": 64, "num_heads": 2},
        "ViT (4 blocks, width 64)",
    ),
    "vit_teacher": (VIT_S_RECIPE.student, VIT_S_RECIPE.student_kwargs, "ViT-S (6 blocks, width 96, patch 7)"),
    "test_resnet": ("test_resnet", {}, "test_resnet"),
}
PAIRS = {
    "cnn_to_vit": {"teacher": "resnet18", "student": "vit_student"},
    "vit_to_cnn": {"teacher": "vit_teacher", "student": "test_resnet"},
}

# The study's own recipe (not Table 8, which is for 100-300 epochs on ImageNet / CIFAR-100).
BASE = {
    "dataset": "fashion_mnist",
    "num_classes": 10,
    "img_size": IMG_SIZE,
    "crop_scale": [0.6, 1.0],
    "color_jitter": 0.0,
    "opt": "adamw",
    "lr": 1e-3,
    "min_lr": 1e-5,
    "weight_decay": 0.05,
    "sched": "cosine",
    "warmup_epochs": 0,
    "batch_size": 64,
    "kd_temperature": 1.0,
    "ofa_gamma": 1.5,
    "ofa_temperature": 1.0,
    "ofa_stages": [1, 2, 3, 4],
    "fitnet_stages": [1, 2, 3, 4],
    "workers": 0,
    "device": "cpu",
    "amp": False,
}
# Each teacher's recipe on top of BASE: more images than the students (train_samples None: all 60,000) so that
# it beats every student from scratch. The ViT-S teacher trains as in configs/train/fmnist_vit_s.yaml (patch 7,
# flips without the random-resized crop, per-update warmup and cosine, 5 epochs: 87.3 % test top-1 there); a
# ViT trained from scratch on small grayscale images needs those steps (the study's first ViT-S teacher, patch 4
# for 3 epochs with the crop, reached 77.9 %, below the test_resnet students from scratch).
VIT_S_TRAINING = ("opt", "lr", "min_lr", "weight_decay", "sched", "warmup_epochs", "sched_on_updates", "epochs",
                  "batch_size", "crop_scale")  # fmt: skip
TEACHER_KEYS = ("student", "student_kwargs", "train_samples", "epochs", "batch_size", "lr")  # provenance, with
# every key a teacher's recipe sets apart from BASE
TEACHER_RECIPES = {
    "resnet18": {"train_samples": 24000, "epochs": 4},
    "vit_teacher": {"train_samples": None, **{key: getattr(VIT_S_RECIPE, key) for key in VIT_S_TRAINING}},
}
FULL = {"train_samples": 4000, "val_samples": 1000, "epochs": 6, "test_samples": None, "probe": 500}
SMOKE = {
    "train_samples": 320, "val_samples": 64, "epochs": 1, "test_samples": 256, "probe": 64,
    "limit_train_batches": 5, "limit_val_batches": 1, "teacher": {"train_samples": 320, "epochs": 1},
}  # fmt: skip
MARK_BEGIN, MARK_END = "<!-- ofa-study:begin -->", "<!-- ofa-study:end -->"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model in this (worker) process; return its metrics history. One CPU thread per job."""
    import torch

    torch.set_num_threads(1)
    from cka_probe.ofa.trainer import METRICS_NAME, Trainer

    config = load_config(None, job["config"])
    out = Path(config.output_dir)
    history = _read_history(out / METRICS_NAME)
    if history and history[-1]["epoch"] >= config.epochs:
        return {"name": job["name"], "history": history, "skipped": True}
    trainer = Trainer(config, overwrite=True)
    resume = "last" if (out / "last.pth").exists() else None
    result = trainer.fit(resume=resume)
    return {"name": job["name"], "history": _read_history(out / METRICS_NAME) or result.history, "skipped": False}


def _read_history(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def make_jobs(out: Path, scale: dict[str, Any]) -> tuple[dict[str, dict], dict[str, list[dict]]]:
    """Teacher jobs (one per pair, its ``TEACHER_RECIPES`` entry) and student jobs (per pair: methods x seeds)."""
    common = dict(BASE, train_samples=scale["train_samples"], val_samples=scale["val_samples"])
    for key in ("limit_train_batches", "limit_val_batches"):
        if key in scale:
            common[key] = scale[key]
    teachers, students = {}, {}
    for pair, spec in PAIRS.items():
        t_name, t_kwargs, _ = MODELS[spec["teacher"]]
        s_name, s_kwargs, _ = MODELS[spec["student"]]
        teacher_dir = out / pair / "teacher"
        recipe = dict(TEACHER_RECIPES[spec["teacher"]], **scale.get("teacher", {}))
        teachers[pair] = {
            "name": f"{pair}/teacher",
            "config": dict(common, method="scratch", student=t_name, student_kwargs=t_kwargs, seed=0, cka_every=0,
                           output_dir=str(teacher_dir), **recipe),
        }  # fmt: skip
        students[pair] = [
            {
                "name": f"{pair}/{method}_seed{seed}",
                "config": dict(
                    common,
                    method=method,
                    student=s_name,
                    student_kwargs=s_kwargs,
                    seed=seed,
                    epochs=scale["epochs"],
                    output_dir=str(out / pair / f"{method}_seed{seed}"),
                    # scratch trains without the teacher; given one, it measures its CKA to it every epoch
                    teacher=t_name,
                    teacher_kwargs=t_kwargs,
                    teacher_checkpoint=str(teacher_dir / "last.pth"),
                ),
            }  # fmt: skip
            for seed in SEEDS  # seed by seed, so that a study cut short keeps whole seeds (rerun it with --seeds)
            for method in METHODS
        ]
    return teachers, students


def train_all(teachers: dict[str, dict], students: dict[str, list[dict]], workers: int) -> dict[str, dict]:
    """Train teachers first, each pair's students as soon as its teacher is done, ``workers`` at a time."""
    results: dict[str, dict] = {}
    context = get_context("spawn")
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        pending = {pool.submit(run_job, job): ("teacher", pair) for pair, job in teachers.items()}
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for future in done:
                kind, pair = pending.pop(future)
                result = future.result()
                results[result["name"]] = result
                final = result["history"][-1]
                note = " (already done)" if result["skipped"] else ""
                print(f"[{time.perf_counter() - started:7.1f}s] {result['name']}: top-1 {final['val']['top1']:.2f}% "
                      f"after {final['epoch']} epochs{note}", flush=True)  # fmt: skip
                if kind == "teacher":
                    for job in students[pair]:
                        pending[pool.submit(run_job, job)] = ("student", pair)
    return results


def evaluate_and_probe(out: Path, teachers: dict, students: dict, scale: dict) -> dict[str, Any]:
    """Top-1 on the test split for every model; CKA of each student against its teacher after training."""
    import timm
    import torch
    from torch.utils.data import DataLoader

    import cka_probe
    from cka_probe.models import load_checkpoint
    from cka_probe.ofa.data import FASHION_MNIST_DIR, FashionMNIST, build_transforms, fixed_subset
    from cka_probe.ofa.monitor import probe_images

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    any_config = load_config(None, next(iter(teachers.values()))["config"])
    _, eval_transform = build_transforms(any_config)
    test_set = FashionMNIST(any_config.data_dir or FASHION_MNIST_DIR, train=False, transform=eval_transform)
    if scale["test_samples"] is not None:
        test_set = fixed_subset(test_set, scale["test_samples"])
    probe, _ = probe_images(test_set, scale["probe"])  # class-balanced, probe seed 0

    def load(job):
        config = load_config(None, job["config"])
        model = timm.create_model(config.student, num_classes=config.num_classes, **config.student_kwargs)
        load_checkpoint(model, Path(config.output_dir) / "last.pth", config.student, strict=True)
        return model.eval()

    @torch.no_grad()
    def top1(model):
        correct = total = 0
        for images, target in DataLoader(test_set, batch_size=256):
            correct += int((model(images).argmax(1) == target).sum())
            total += len(target)
        return 100.0 * correct / total

    @torch.no_grad()
    def features(model):
        with cka_probe.FeatureRecorder(model) as recorder:
            model(probe)
        return recorder.features

    accuracy, heatmaps, last_layer_cka = {}, {}, {}
    for pair, teacher_job in teachers.items():
        teacher = load(teacher_job)
        accuracy[teacher_job["name"]] = top1(teacher)
        teacher_features = features(teacher)
        for job in students[pair]:
            student = load(job)
            accuracy[job["name"]] = top1(student)
            matrix = cka_probe.cka_matrix(features(student), teacher_features)
            last_layer_cka[job["name"]] = float(matrix.values[-1, -1])
            if job["config"]["seed"] == SEEDS[0]:
                heatmaps[job["name"]] = {
                    "rows": list(matrix.rows), "cols": list(matrix.cols), "values": matrix.values.tolist(),
                }  # fmt: skip
            print(f"  {job['name']}: test top-1 {accuracy[job['name']]:.2f}%", flush=True)
    return {"test_top1": accuracy, "cka": heatmaps, "last_layer_cka": last_layer_cka, "test_images": len(test_set),
            "probe_images": len(probe)}  # fmt: skip


def _spread(values: Sequence[float]) -> float:
    """Sample standard deviation over seeds (0 for one seed)."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def teacher_margins(accuracy: Mapping[str, float]) -> dict[str, dict[str, Any]]:
    """The paper's precondition, per pair: the teacher's top-1 against each from-scratch student's, seed by seed.

    Returns:
        ``{pair: {"teacher": top-1, "scratch": [top-1 per seed], "margin": teacher - best scratch seed,
        "holds": margin > 0}}``.
    """
    margins = {}
    for pair in PAIRS:
        teacher = accuracy[f"{pair}/teacher"]
        scratch = [accuracy[f"{pair}/scratch_seed{seed}"] for seed in SEEDS]
        margin = teacher - max(scratch)
        margins[pair] = {"teacher": teacher, "scratch": scratch, "margin": margin, "holds": margin > 0}
    return margins


def _title(pair: str) -> str:
    spec = PAIRS[pair]
    return f"{MODELS[spec['teacher']][2]} teacher -> {MODELS[spec['student']][2]} student"


def precondition_table(margins: Mapping[str, Mapping[str, Any]]) -> str:
    """Markdown: teacher top-1, scratch top-1 per seed, the margin over the best seed, and whether it holds."""
    lines = ["| pair | teacher | scratch students (per seed) | teacher - best scratch | teacher beats every one |",
             "|---|---:|---:|---:|---|"]  # fmt: skip
    for pair, row in margins.items():
        per_seed = ", ".join(f"{value:.2f}" for value in row["scratch"])
        lines.append(f"| {_title(pair)} | {row['teacher']:.2f} | {per_seed} | {row['margin']:+.2f} | "
                     f"{'yes' if row['holds'] else 'NO'} |")  # fmt: skip
    return "\n".join(lines)


def top1_table(accuracy: Mapping[str, float]) -> str:
    """Markdown: test top-1 mean +- std over seeds per pair and method; each distilled method's difference
    from scratch, taken seed by seed (the same seed gives the same initial weights and data order), mean +- std."""
    header = "| pair | teacher | " + " | ".join(METHODS) + " |\n|---|---:|" + "---:|" * len(METHODS) + "\n"
    rows = []
    for pair in PAIRS:
        scratch = [accuracy[f"{pair}/scratch_seed{seed}"] for seed in SEEDS]
        cells = []
        for method in METHODS:
            values = [accuracy[f"{pair}/{method}_seed{seed}"] for seed in SEEDS]
            cell = f"{statistics.mean(values):.2f} ± {_spread(values):.2f}"
            if method != "scratch":
                difference = [value - base for value, base in zip(values, scratch)]
                cell += f" ({statistics.mean(difference):+.2f} ± {_spread(difference):.2f})"
            cells.append(cell)
        rows.append(f"| {_title(pair)} | {accuracy[f'{pair}/teacher']:.2f} | " + " | ".join(cells) + " |")
    return header + "\n".join(rows)


def last_layer_table(cka: Mapping[str, float]) -> str:
    """Markdown: last-layer CKA to the teacher after training, mean +- std over seeds (per seed in brackets)."""
    header = "| pair | " + " | ".join(METHODS) + " |\n|---|" + "---:|" * len(METHODS) + "\n"
    rows = []
    for pair in PAIRS:
        cells = []
        for method in METHODS:
            values = [cka[f"{pair}/{method}_seed{seed}"] for seed in SEEDS]
            per_seed = ", ".join(f"{v:.3f}" for v in values)
            cells.append(f"{statistics.mean(values):.3f} ± {_spread(values):.3f} ({per_seed})")
        rows.append(f"| {_title(pair)} | " + " | ".join(cells) + " |")
    return header + "\n".join(rows)


def cka_trajectories(histories: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """CKA to the teacher of every student run at its first and last measured epoch, per question.

    Args:
        histories: run name (``pair/method_seedK``) -> its ``metrics.jsonl`` records.

    Returns:
        ``{run name: {"first_epoch": e, "last_epoch": e, "first": {question: cka}, "last": {question: cka}}}``
        for the student (not its EMA), runs without a measurement left out.
    """
    trajectories = {}
    for name, records in histories.items():
        measured = [record for record in records if "cka_to_teacher" in record]
        if not measured:
            continue
        first, last = measured[0], measured[-1]
        trajectories[name] = {
            "first_epoch": first["epoch"], "last_epoch": last["epoch"],
            "first": dict(first["cka_to_teacher"]["student"]), "last": dict(last["cka_to_teacher"]["student"]),
        }  # fmt: skip
    return trajectories


def cka_training_table(trajectories: Mapping[str, Mapping[str, Any]], pair: str) -> str:
    """Markdown for one pair: per method and question, the CKA to the teacher at the last epoch and its change
    since the first measured epoch, each mean +- std over seeds (the change taken seed by seed)."""
    questions = list(trajectories[f"{pair}/{METHODS[0]}_seed{SEEDS[0]}"]["last"])
    header = "| method | " + " | ".join(questions) + " |\n|---|" + "---:|" * len(questions) + "\n"
    rows = []
    for method in METHODS:
        runs = [trajectories[f"{pair}/{method}_seed{seed}"] for seed in SEEDS]
        cells = []
        for question in questions:
            last = [run["last"][question] for run in runs]
            change = [run["last"][question] - run["first"][question] for run in runs]
            cells.append(f"{statistics.mean(last):.3f} ± {_spread(last):.3f} "
                         f"({statistics.mean(change):+.3f} ± {_spread(change):.3f})")  # fmt: skip
        rows.append(f"| {method} | " + " | ".join(cells) + " |")
    return header + "\n".join(rows)


def draw_heatmaps(evaluation: dict[str, Any], path: Path) -> None:
    import pandas as pd

    from cka_probe.plots import names_fit_heatmap, new_figure, plot_cka_heatmap

    figure = new_figure(width=4.4 * len(METHODS), height=4.0 * len(PAIRS))
    axes = figure.subplots(len(PAIRS), len(METHODS), squeeze=False)
    frames = {}
    for pair in PAIRS:
        for method in METHODS:
            cell = evaluation["cka"][f"{pair}/{method}_seed{SEEDS[0]}"]
            frames[pair, method] = pd.DataFrame(cell["values"], index=cell["rows"], columns=cell["cols"])
    # --labels auto once for the figure: names on every panel where they fit on all, else numbers on all
    fits = all(names_fit_heatmap(frames[p, m], axes[r][c]) for r, p in enumerate(PAIRS) for c, m in enumerate(METHODS))
    for row, pair in enumerate(PAIRS):
        student, teacher = (MODELS[PAIRS[pair][role]][2] for role in ("student", "teacher"))
        for col, method in enumerate(METHODS):
            plot_cka_heatmap(frames[pair, method], ax=axes[row][col], title=f"{method}, seed {SEEDS[0]}",
                             xlabel=f"layers of the {teacher} teacher", ylabel=f"layers of the {student} student",
                             labels="names" if fits else "index", colorbar=col == len(METHODS) - 1)  # fmt: skip
    figure.suptitle(f"Linear CKA after training, student (rows) against teacher (columns): activation layers, "
                    f"mean-pooled, {evaluation['probe_images']} class-balanced Fashion-MNIST test images")  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def draw_training_curves(out: Path, folder: Path) -> dict[str, Path]:
    """Per pair, CKA to the teacher during training: seed 0 of each method side by side, into ``folder``."""
    from cka_probe.ofa.monitor import draw_cka_runs

    paths = {}
    for pair, spec in PAIRS.items():
        runs = {f"{method}, seed {SEEDS[0]}": out / pair / f"{method}_seed{SEEDS[0]}" for method in METHODS}
        path = draw_cka_runs(runs, folder / f"ofa_study_cka_training_{pair}.png", student=MODELS[spec["student"]][2],
                             teacher=MODELS[spec["teacher"]][2], data="Fashion-MNIST validation")  # fmt: skip
        if path is not None:
            paths[pair] = path
    return paths


def project_full_run(results: Mapping[str, Mapping[str, Any]], full_jobs: Mapping[str, Mapping[str, Any]],
                     smoke_val_batches: int, workers: int) -> float:  # fmt: skip
    """Seconds the full study would train for, from the smoke run's measured seconds per training step, per
    validation batch and per CKA measurement, scaled to each job's full configuration (``full_jobs``: run name
    -> config), divided over ``workers``."""
    total = 0.0
    for name, result in results.items():
        record = result["history"][-1]
        config = full_jobs[name]
        per_step = record["train_seconds"] / max(record["train"]["steps"], 1)
        cka_seconds = record.get("cka_seconds", 0.0)
        per_val_batch = (record["seconds"] - record["train_seconds"] - cka_seconds) / max(smoke_val_batches, 1)
        samples = config["train_samples"] or FASHION_MNIST_TRAIN
        steps = config["epochs"] * (samples // config["batch_size"])
        val_batches = math.ceil(config["val_samples"] / config["batch_size"])
        total += steps * per_step + config["epochs"] * (val_batches * per_val_batch + cka_seconds)
    return total / workers


def update_docs(doc: Path, body: str) -> None:
    text = doc.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise SystemExit(f"{doc} has no {MARK_BEGIN} ... {MARK_END} section to fill")
    text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: f"{MARK_BEGIN}\n{body}\n{MARK_END}",
                  text, flags=re.S)  # fmt: skip
    doc.write_text(text)


def docs_body(evaluation: dict[str, Any], trajectories: dict, figures: dict[str, Path], doc_dir: Path,
              provenance: dict[str, Any]) -> str:  # fmt: skip
    """The markdown written between the markers: precondition, top-1, CKA after and during training, figures."""
    accuracy = evaluation["test_top1"]
    seeds = list(SEEDS)
    parts = [
        f"**Precondition** (test top-1, %, {evaluation['test_images']:,} Fashion-MNIST test images): each teacher "
        f"against every student of its pair trained from scratch, seeds {seeds}.",
        precondition_table(teacher_margins(accuracy)),
        f"**Test top-1** (%), mean ± std over seeds {seeds}; in brackets each distilled method minus scratch, "
        "taken seed by seed, mean ± std.",
        top1_table(accuracy),
        "**CKA after training**: linear CKA between the last activation layers of each student and its teacher "
        f"({evaluation['probe_images']} class-balanced test images), mean ± std over seeds (per seed in brackets).",
        last_layer_table(evaluation["last_layer_cka"]),
        f"![CKA of each seed-{SEEDS[0]} student (rows) against its teacher (columns)]"
        f"({figures['heatmaps'].relative_to(doc_dir)})",
    ]
    for pair in PAIRS:
        any_run = trajectories[f"{pair}/{METHODS[0]}_seed{SEEDS[0]}"]
        parts += [
            f"**CKA to the teacher during training, {_title(pair)}**: each stage's and the final features' linear "
            f"CKA to the teacher's on the 128-image validation probe at the last epoch ({any_run['last_epoch']}), "
            f"mean ± std over seeds; in brackets its change since epoch {any_run['first_epoch']}, seed by seed, "
            "mean ± std.",
            cka_training_table(trajectories, pair),
        ]
        if pair in figures:
            parts.append(f"![CKA to the teacher during training, {_title(pair)}, seed {SEEDS[0]} of each method]"
                         f"({figures[pair].relative_to(doc_dir)})")  # fmt: skip
    parts.append(f"Provenance: {json.dumps(provenance)}")
    return "\n\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    global SEEDS  # the summaries read the module's seeds
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="1 epoch of a few batches per run; no docs update")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="runs and results (default figures/_scratch/ofa_study[_smoke], which git ignores)",
    )
    parser.add_argument("--workers", type=int, default=2, help="training processes at a time (one thread each)")
    parser.add_argument("--no-docs", action="store_true", help="do not write into docs/ofa.md")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS), help="training seeds (at least two)")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) < 2:
        parser.error("give at least two different --seeds: the study reports the spread over seeds")
    SEEDS = tuple(args.seeds)

    scale = SMOKE if args.smoke else FULL
    out = args.out or REPO / "figures" / "_scratch" / ("ofa_study_smoke" if args.smoke else "ofa_study")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teachers, students = make_jobs(out, scale)
    results = train_all(teachers, students, args.workers)
    trained = time.perf_counter() - started
    print(f"trained {len(results)} models in {trained:.0f}s; evaluating and probing", flush=True)
    to_docs = not (args.smoke or args.no_docs)
    doc_dir = REPO / "docs"
    figure_dir = doc_dir if to_docs else out
    figures = draw_training_curves(out, figure_dir)
    evaluation = evaluate_and_probe(out, teachers, students, scale)
    figures["heatmaps"] = figure_dir / "ofa_study_cka.png"
    draw_heatmaps(evaluation, figures["heatmaps"])
    trajectories = cka_trajectories({name: result["history"] for name, result in results.items()})

    import timm
    import torch

    import cka_probe

    provenance = {
        "data": "Fashion-MNIST (dataset-fashion-mnist IDX files)",
        "train_samples": scale["train_samples"], "epochs": scale["epochs"],
        "teachers": {pair: {key: value for key, value in teachers[pair]["config"].items()
                            if key != "output_dir" and (key in TEACHER_KEYS or BASE.get(key) != value)}
                      for pair in PAIRS},
        "seeds": list(SEEDS), "recipe": BASE, "models": {key: list(value[:2]) for key, value in MODELS.items()},
        "versions": {"cka_probe": cka_probe.__version__, "torch": torch.__version__, "timm": timm.__version__,
                     "python": platform.python_version()},
        "train_seconds": round(trained), "total_seconds": round(time.perf_counter() - started), "smoke": args.smoke,
    }  # fmt: skip
    body = docs_body(evaluation, trajectories, figures, figure_dir, provenance)
    (out / "results.json").write_text(json.dumps({"provenance": provenance, "evaluation": evaluation,
                                                  "cka_to_teacher": trajectories, "histories": results},
                                                 indent=1))  # fmt: skip
    print(body)
    print("figures: " + ", ".join(str(path) for path in figures.values()))
    print(f"total wall time {time.perf_counter() - started:.0f}s (training {trained:.0f}s)", flush=True)
    if args.smoke:
        full_teachers, full_students = make_jobs(out, FULL)
        full_jobs = {job["name"]: job["config"] for job in [*full_teachers.values(), *sum(full_students.values(), [])]}
        projected = project_full_run(results, full_jobs, SMOKE["limit_val_batches"], args.workers)
        print(f"the full study would train for about {projected / 60:.0f} min with {args.workers} workers "
              f"(plus evaluation), from this smoke run's step times")  # fmt: skip
    elif to_docs:
        update_docs(doc_dir / "ofa.md", body)
        print("docs/ofa.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
