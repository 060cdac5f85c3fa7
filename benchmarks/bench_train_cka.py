"""Benchmark: what measuring CKA to the teacher costs a training epoch, at the default probe size (128 images).

One process, the validation study's setting (``scripts/ofa_study.py``) on a third of its data: Fashion-MNIST
at 32 x 32, a 2,000-image training subset (the study's is 6,000) and 1,000 validation images, a ResNet-18 teacher (seeded random weights: the
cost does not depend on them) and the 4-block ViT student (patch 4, width 64), distilled with OFA on
stages 1-4, EMA on (so the probe measures two models, the most it does), AdamW, batch 64, one thread. Two
runs of the same recipe, one epoch each by default, side by side:

* ``--cka-every 0``: no measurement;
* ``--cka-every 1``: the student and its EMA against the teacher on 128 class-balanced validation images,
  every epoch (the first epoch also takes the teacher's features, once, so it is the dearest).

Each epoch's wall time is what the trainer records (``seconds``: training, evaluation of student and EMA,
the measurement, the checkpoint); the measurement's own time is its ``cka_seconds``. Printed: the epoch
times of both runs, the measurement's seconds and its share of the rest of the epoch, and the difference of
the two runs' epochs (noisier: the machine's load varies between runs). The measurement's cost is fixed
(the probe's forward passes), so its share falls as 1 / (images per epoch): the study's 6,000-image epoch
has a third of this share, the full 60,000-image Fashion-MNIST epoch a thirtieth.

Run:  python benchmarks/bench_train_cka.py [--epochs 1] [--train-samples 2000] [--threads 1]   (about 3 min)
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import timm
import torch

from cka_probe.ofa.config import load_config
from cka_probe.ofa.trainer import Trainer

STUDENT = ("vit_tiny_patch16_224", {"img_size": 32, "patch_size": 4, "depth": 4, "embed_dim": 64, "num_heads": 2})


def run(folder: Path, teacher: Path, cka_every: int, args) -> list[dict]:
    config = load_config(
        None,
        {
            "method": "ofa", "student": STUDENT[0], "student_kwargs": STUDENT[1], "teacher": "resnet18",
            "teacher_checkpoint": str(teacher), "dataset": "fashion_mnist", "num_classes": 10, "img_size": 32,
            "train_samples": args.train_samples, "val_samples": args.val_samples, "crop_scale": [0.6, 1.0],
            "color_jitter": 0.0, "opt": "adamw", "lr": 1e-3, "min_lr": 1e-5, "weight_decay": 0.05,
            "warmup_epochs": 1, "batch_size": 64, "ema_decay": 0.999, "ofa_gamma": 1.5, "epochs": args.epochs,
            "workers": 0, "device": "cpu", "amp": False, "cka_every": cka_every, "cka_probe_size": args.probe,
            "output_dir": str(folder / f"cka_every_{cka_every}"),
        },
    )  # fmt: skip
    return Trainer(config, overwrite=True).fit().history


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-samples", type=int, default=2000)
    parser.add_argument("--val-samples", type=int, default=1000)
    parser.add_argument("--probe", type=int, default=128, help="probe images (cka_probe_size)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        torch.manual_seed(0)
        teacher = folder / "teacher.pth"
        torch.save(timm.create_model("resnet18", num_classes=10).state_dict(), teacher)
        plain = run(folder, teacher, 0, args)
        probed = run(folder, teacher, 1, args)

    print(
        f"OFA, ResNet-18 teacher -> 4-block ViT student, Fashion-MNIST 32 px, {args.train_samples} training and "
        f"{args.val_samples} validation images, probe {args.probe} images, student + EMA, "
        f"{args.threads} thread(s)"
    )
    print(
        f"{'epoch':>5}  {'no probe (s)':>12}  {'probe on (s)':>12}  {'CKA (s)':>8}  {'CKA share':>9}  {'difference':>10}"
    )
    for a, b in zip(plain, probed):
        share = b["cka_seconds"] / (b["seconds"] - b["cka_seconds"])
        difference = b["seconds"] / a["seconds"] - 1
        print(
            f"{a['epoch']:>5}  {a['seconds']:>12.1f}  {b['seconds']:>12.1f}  {b['cka_seconds']:>8.2f}  "
            f"{100 * share:>8.2f}%  {100 * difference:>+9.2f}%"
        )
    share = sum(r["cka_seconds"] for r in probed) / sum(r["seconds"] - r["cka_seconds"] for r in probed)
    print(f"CKA share over all epochs: {100 * share:.2f}% of the epoch's other work (target <= 3%)")
    print("last record:", json.dumps(probed[-1]["cka_to_teacher"]["student"]))


if __name__ == "__main__":
    main()
