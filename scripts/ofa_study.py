"""Validation study of the OFA module on Fashion-MNIST: scratch / KD / FitNet / OFA students of two heterogeneous pairs.

Pairs (tiny timm configurations, 32 x 32 inputs, sized for a 2-core CPU):

* ``cnn_to_vit``: a ResNet-18 teacher, a 4-block ViT student (patch 4, width 64);
* ``vit_to_cnn``: a 6-block ViT teacher (patch 4, width 96), timm's ``test_resnet`` student.

Every student is trained with each method and each seed on the same fixed training subset; teachers are
trained from scratch first (longer). Afterwards the script evaluates every model on the full test split
(10,000 images), computes CKA of every student against its teacher with cka-probe's own engine
(:class:`cka_probe.FeatureRecorder` on the activation layers, mean-pooled, then :func:`cka_probe.cka_matrix`;
the last-layer CKA of every seed, the heatmaps of seed 0), and writes the top-1 and CKA tables (mean +- std
over seeds, and CKA per seed) into ``docs/ofa.md``
between the ``ofa-study`` markers, the heatmaps beside it, and everything with its provenance
to ``OUT/results.json``.

Runs are resumable: a finished run is skipped, an interrupted one resumes from its last checkpoint.

Usage::

    python scripts/ofa_study.py                  # the full study (3 seeds; measured: 43 min of training and
                                                 # 3 of evaluation on 2 cores)
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
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from multiprocessing import get_context
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
METHODS = ("scratch", "kd", "fitnet", "ofa")
SEEDS = (0, 1, 2)

MODELS = {
    "resnet18": ("resnet18", {}),
    "vit_student": (
        "vit_tiny_patch16_224",
        {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 64, "num_heads": 2},
    ),
    "vit_teacher": (
        "vit_tiny_patch16_224",
        {"img_size": 32, "patch_size": 4, "depth": 6, "embed_dim": 96, "num_heads": 3},
    ),
    "test_resnet": ("test_resnet", {}),
}
PAIRS = {
    "cnn_to_vit": {"teacher": "resnet18", "student": "vit_student", "title": "ResNet-18 teacher -> ViT student"},
    "vit_to_cnn": {"teacher": "vit_teacher", "student": "test_resnet", "title": "ViT teacher -> test_resnet student"},
}

# The study's own recipe (not Table 8, which is for 100-300 epochs on ImageNet / CIFAR-100).
BASE = {
    "dataset": "fashion_mnist",
    "num_classes": 10,
    "img_size": 32,
    "crop_scale": [0.6, 1.0],
    "color_jitter": 0.0,
    "opt": "adamw",
    "lr": 1e-3,
    "min_lr": 1e-5,
    "weight_decay": 0.05,
    "sched": "cosine",
    "warmup_epochs": 1,
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
# Teachers see four times the students' images, so that they are stronger than the students trained from
# scratch (the paper's precondition; B.2 makes Swin-Nano/Pico for it).
FULL = {"train_samples": 6000, "teacher_train_samples": 24000, "val_samples": 1000, "epochs": 8, "teacher_epochs": 8,
        "test_samples": None, "probe": 500}  # fmt: skip
SMOKE = {
    "train_samples": 320, "val_samples": 64, "epochs": 1, "teacher_epochs": 1, "test_samples": 256, "probe": 64,
    "limit_train_batches": 5, "limit_val_batches": 1,
}  # fmt: skip
MARK_BEGIN, MARK_END = "<!-- ofa-study:begin -->", "<!-- ofa-study:end -->"


def run_job(job: dict[str, Any]) -> dict[str, Any]:
    """Train one model in this (worker) process; return its metrics history. One CPU thread per job."""
    import torch

    torch.set_num_threads(1)
    from cka_probe.ofa.config import load_config
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
    """Teacher jobs (one per pair) and student jobs (per pair: methods x seeds)."""
    common = dict(BASE, train_samples=scale["train_samples"], val_samples=scale["val_samples"])
    for key in ("limit_train_batches", "limit_val_batches"):
        if key in scale:
            common[key] = scale[key]
    teachers, students = {}, {}
    for pair, spec in PAIRS.items():
        t_name, t_kwargs = MODELS[spec["teacher"]]
        s_name, s_kwargs = MODELS[spec["student"]]
        teacher_dir = out / pair / "teacher"
        teachers[pair] = {
            "name": f"{pair}/teacher",
            "config": dict(common, method="scratch", student=t_name, student_kwargs=t_kwargs, seed=0,
                           epochs=scale["teacher_epochs"], output_dir=str(teacher_dir),
                           train_samples=scale.get("teacher_train_samples", scale["train_samples"])),
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
            for method in METHODS
            for seed in SEEDS
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
    """Top-1 on the test split for every model; CKA of each seed-0 student against its teacher."""
    import timm
    import torch
    from torch.utils.data import DataLoader

    import cka_probe
    from cka_probe.models import load_checkpoint
    from cka_probe.ofa.config import load_config
    from cka_probe.ofa.data import FASHION_MNIST_DIR, FashionMNIST, build_transforms, fixed_subset

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    any_config = load_config(None, next(iter(teachers.values()))["config"])
    _, eval_transform = build_transforms(any_config)
    test_set = FashionMNIST(any_config.data_dir or FASHION_MNIST_DIR, train=False, transform=eval_transform)
    if scale["test_samples"] is not None:
        test_set = fixed_subset(test_set, scale["test_samples"])
    probe_images = torch.stack([test_set[i][0] for i in _balanced_indices(test_set, scale["probe"])])

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
            model(probe_images)
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
            "probe_images": len(probe_images)}  # fmt: skip


def _balanced_indices(dataset, count: int) -> list[int]:
    """The first ``count / 10`` images of each class, in dataset order."""
    targets = dataset.dataset.targets[dataset.indices] if hasattr(dataset, "indices") else dataset.targets
    per_class = max(1, count // 10)
    chosen, seen = [], {}
    for index, label in enumerate(targets.tolist()):
        if seen.get(label, 0) < per_class:
            chosen.append(index)
            seen[label] = seen.get(label, 0) + 1
    return chosen[:count]


def summary_table(evaluation: dict[str, Any], teachers: dict, students: dict) -> str:
    """Markdown: test top-1 mean +- std over seeds per pair and method, teacher top-1, last-layer CKA."""
    accuracy = evaluation["test_top1"]
    header = "| pair | teacher | " + " | ".join(METHODS) + " |\n|---|---:|" + "---:|" * len(METHODS) + "\n"
    rows = []
    for pair in PAIRS:
        cells = []
        for method in METHODS:
            values = [accuracy[f"{pair}/{method}_seed{seed}"] for seed in SEEDS]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            cells.append(f"{statistics.mean(values):.2f} ± {spread:.2f}")
        rows.append(f"| {PAIRS[pair]['title']} | {accuracy[teachers[pair]['name']]:.2f} | " + " | ".join(cells) + " |")
    cka = evaluation["last_layer_cka"]
    cka_header = "\n\n| pair | " + " | ".join(METHODS) + " |\n|---|" + "---:|" * len(METHODS) + "\n"
    cka_rows = []
    for pair in PAIRS:
        cells = []
        for method in METHODS:
            values = [cka[f"{pair}/{method}_seed{seed}"] for seed in SEEDS]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            per_seed = ", ".join(f"{v:.3f}" for v in values)
            cells.append(f"{statistics.mean(values):.3f} ± {spread:.3f} ({per_seed})")
        cka_rows.append(f"| {PAIRS[pair]['title']} | " + " | ".join(cells) + " |")
    return header + "\n".join(rows) + cka_header + "\n".join(cka_rows)


def draw_heatmaps(evaluation: dict[str, Any], path: Path) -> None:
    import pandas as pd

    from cka_probe.plots import new_figure, plot_cka_heatmap

    figure = new_figure(width=4.0 * len(METHODS), height=3.6 * len(PAIRS))
    axes = figure.subplots(len(PAIRS), len(METHODS), squeeze=False)
    for row, pair in enumerate(PAIRS):
        for col, method in enumerate(METHODS):
            cell = evaluation["cka"][f"{pair}/{method}_seed{SEEDS[0]}"]
            frame = pd.DataFrame(cell["values"], index=cell["rows"], columns=cell["cols"])
            frame.index.name, frame.columns.name = "student", "teacher"
            plot_cka_heatmap(frame, ax=axes[row][col], title=f"{PAIRS[pair]['title'].split(' -> ')[1]}: {method}",
                             colorbar=col == len(METHODS) - 1)  # fmt: skip
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=110)


def project_full_run(results: dict[str, dict], scale: dict[str, Any], workers: int) -> float:
    """Seconds the full study would take, from the smoke run's measured seconds per training step."""
    total = 0.0
    for name, result in results.items():
        record = result["history"][-1]
        per_step = record["train_seconds"] / max(record["train"]["steps"], 1)
        per_eval_batch = (record["seconds"] - record["train_seconds"]) / max(scale.get("limit_val_batches") or 1, 1)
        teacher = name.endswith("/teacher")
        epochs = FULL["teacher_epochs"] if teacher else FULL["epochs"]
        samples = FULL["teacher_train_samples"] if teacher else FULL["train_samples"]
        steps = epochs * (samples // BASE["batch_size"])
        eval_batches = epochs * math.ceil(FULL["val_samples"] / BASE["batch_size"])
        total += steps * per_step + eval_batches * per_eval_batch
    return total / workers


def update_docs(doc: Path, table: str, figure: Path, provenance: dict[str, Any], test_images: int) -> None:
    text = doc.read_text()
    if MARK_BEGIN not in text or MARK_END not in text:
        raise SystemExit(f"{doc} has no {MARK_BEGIN} ... {MARK_END} section to fill")
    body = (
        f"{MARK_BEGIN}\nTest top-1 (%) on {test_images:,} Fashion-MNIST test images, mean ± std over seeds {list(SEEDS)}; "
        f"second table: linear CKA between the last activation layers of each student and its teacher, mean ± std "
        f"over seeds (per seed in brackets); heatmaps of the seed-0 students.\n\n"
        f"{table}\n\n![CKA of each student (rows) against its teacher (columns)]({figure.relative_to(doc.parent)})\n\n"
        f"Provenance: {json.dumps(provenance)}\n{MARK_END}"
    )
    text = re.sub(re.escape(MARK_BEGIN) + ".*?" + re.escape(MARK_END), lambda _: body, text, flags=re.S)
    doc.write_text(text)


def main(argv: list[str] | None = None) -> int:
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
    args = parser.parse_args(argv)

    scale = SMOKE if args.smoke else FULL
    out = args.out or REPO / "figures" / "_scratch" / ("ofa_study_smoke" if args.smoke else "ofa_study")
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    teachers, students = make_jobs(out, scale)
    results = train_all(teachers, students, args.workers)
    trained = time.perf_counter() - started
    print(f"trained {len(results)} models in {trained:.0f}s; evaluating and probing", flush=True)
    from cka_probe.ofa.monitor import draw_cka_runs

    for pair, spec in PAIRS.items():  # CKA to the teacher during training, seed 0 of each method side by side
        runs = {method: out / pair / f"{method}_seed0" for method in METHODS}
        path = draw_cka_runs(runs, out / f"cka_to_teacher_{pair}.png", student=MODELS[spec["student"]][0],
                             teacher=MODELS[spec["teacher"]][0], data="Fashion-MNIST")  # fmt: skip
        print(f"CKA to the teacher during training ({spec['title']}): {path}", flush=True)
    evaluation = evaluate_and_probe(out, teachers, students, scale)
    table = summary_table(evaluation, teachers, students)
    figure = out / "cka_heatmaps.png" if (args.smoke or args.no_docs) else REPO / "docs" / "ofa_study_cka.png"
    draw_heatmaps(evaluation, figure)

    import timm
    import torch

    import cka_probe

    provenance = {
        "data": "Fashion-MNIST (dataset-fashion-mnist IDX files)",
        "train_samples": scale["train_samples"], "epochs": scale["epochs"], "teacher_epochs": scale["teacher_epochs"],
        "teacher_train_samples": scale.get("teacher_train_samples", scale["train_samples"]),
        "seeds": list(SEEDS), "recipe": BASE, "models": MODELS,
        "versions": {"cka_probe": cka_probe.__version__, "torch": torch.__version__, "timm": timm.__version__,
                     "python": platform.python_version()},
        "train_seconds": round(trained), "smoke": args.smoke,
    }  # fmt: skip
    (out / "results.json").write_text(json.dumps({"provenance": provenance, "evaluation": evaluation,
                                                  "histories": results}, indent=1))  # fmt: skip
    print(table)
    print(f"heatmaps: {figure}")
    if args.smoke:
        projected = project_full_run(results, scale, args.workers)
        print(f"smoke run took {time.perf_counter() - started:.0f}s; the full study would train for about "
              f"{projected / 60:.0f} min with {args.workers} workers (plus evaluation)")  # fmt: skip
    elif not args.no_docs:
        update_docs(REPO / "docs" / "ofa.md", table, figure, provenance, evaluation["test_images"])
        print("docs/ofa.md updated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
