"""The recipe sweep behind ``configs/train/fmnist_*.yaml`` (Figure 6 on networks trained on Fashion-MNIST).

Each variant is ``cka-probe train`` on one of the three recipes with ``--set`` overrides, on all 60,000 training
images, its top-1 measured on all 10,000 test images after every epoch (``val_samples=null``). Variants run as
separate processes, all at once (``--device cuda``: one GPU shared; several CPU cores help, one per variant).
Round 1 asked which patch size, schedule stepping, batch and learning rate train fastest for a CPU's cost;
round 2 tried the winners and their neighbours with flips alone instead of the random-resized crop. The cost
of a variant on a CPU is its images times the network's per-image time on one core (878 images/s for the ViT-S
at patch 7, 278 at patch 4; 631 and 230 for the Mixer; 225 for the MobileNetV2 at output stride 8, 391 at 16,
683 at 32: forward and backward at batch 128, one thread, the development machine).

Usage::

    python scripts/fmnist_recipe_sweep.py --device cuda --round 1 --out /tmp/sweep   # writes OUT/sweep.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VIT, MIX, MNV = (f"configs/train/fmnist_{name}.yaml" for name in ("vit_s", "mixer_b16", "mobilenetv2"))
VIT_KWARGS = "student_kwargs={img_size: 28, patch_size: %d, embed_dim: 96, depth: 6, num_heads: 3}"
# Round 1 ran against the recipes before the sweep: patch 4, random-resized crop (scale 0.7-1), per-epoch steps,
# batch 128, 3 epochs on 20,000 images; these overrides rebuild each variant from today's recipes.
OLD = ["crop_scale=[0.7, 1.0]", "sched_on_updates=false", "batch_size=128", "warmup_epochs=0", "lr=0.002"]
OLD_VIT, OLD_MIX = [*OLD, VIT_KWARGS % 4], [*OLD, "student=mixer_mini_patch4"]
OLD_MNV = ["crop_scale=[0.7, 1.0]", "sched_on_updates=false", "batch_size=128", "lr=0.05"]
UPD = ["sched_on_updates=true"]
ROUNDS = {
    1: {
        "vit_p4_e2_lr2e-3_b128": (VIT, [*OLD_VIT, "epochs=2"]),
        "vit_p4_e2_upd_lr1e-3_b64": (VIT, [*OLD_VIT, *UPD, "epochs=2", "lr=0.001", "batch_size=64"]),
        "vit_p7_e5_upd_wu1_lr2e-3_b128": (VIT, [*OLD_VIT, *UPD, "epochs=5", "warmup_epochs=1", VIT_KWARGS % 7]),
        "vit_p7_e5_upd_wu1_lr1e-3_b64": (VIT, [*OLD_VIT, *UPD, "epochs=5", "warmup_epochs=1", "lr=0.001", "batch_size=64", VIT_KWARGS % 7]),
        "vit_p7_e5_upd_wu1_lr1e-3_b64_flips": (VIT, [*OLD_VIT, *UPD, "epochs=5", "warmup_epochs=1", "lr=0.001", "batch_size=64", "crop_scale=[1.0, 1.0]", VIT_KWARGS % 7]),
        "vit_p7_e5_upd_wu1_lr2e-3_b64": (VIT, [*OLD_VIT, *UPD, "epochs=5", "warmup_epochs=1", "batch_size=64", VIT_KWARGS % 7]),
        "mix_p4_e2_lr2e-3_b128": (MIX, [*OLD_MIX, "epochs=2"]),
        "mix_p7_e4_upd_wu1_lr2e-3_b128": (MIX, [*OLD, *UPD, "epochs=4", "warmup_epochs=1"]),
        "mix_p7_e4_upd_wu1_lr1e-3_b64": (MIX, [*OLD, *UPD, "epochs=4", "warmup_epochs=1", "lr=0.001", "batch_size=64"]),
        "mix_p7_e4_upd_wu1_lr2e-3_b64": (MIX, [*OLD, *UPD, "epochs=4", "warmup_epochs=1", "batch_size=64"]),
        "mnv_os8_e2_b128": (MNV, [*OLD_MNV, "epochs=2"]),
        "mnv_os8_e2_upd_b64": (MNV, [*OLD_MNV, *UPD, "epochs=2", "batch_size=64"]),
        "mnv_os16_e2_upd_b64": (MNV, [*OLD_MNV, *UPD, "epochs=2", "batch_size=64", "student_kwargs={output_stride: 16}"]),
        "mnv_os16_e2_upd_b128_lr0.1": (MNV, [*OLD_MNV, *UPD, "epochs=2", "lr=0.1", "student_kwargs={output_stride: 16}"]),
        "mnv_os32_e4_upd_b64": (MNV, [*OLD_MNV, *UPD, "epochs=4", "batch_size=64", "student_kwargs={}"]),
        "mnv_os32_e4_upd_b128_lr0.1": (MNV, [*OLD_MNV, *UPD, "epochs=4", "lr=0.1", "student_kwargs={}"]),
    },
    2: {  # the recipes as committed, and neighbours
        "mnv": (MNV, []),
        "mnv_lr0.1": (MNV, ["lr=0.1"]),
        "mnv_b32": (MNV, ["batch_size=32"]),
        "mix_e4_lr1e-3": (MIX, ["epochs=4", "lr=0.001"]),
        "mix": (MIX, []),
        "vit": (VIT, []),
        "vit_e4": (VIT, ["epochs=4"]),
        "vit_b32": (VIT, ["batch_size=32"]),
    },
}  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--round", type=int, choices=sorted(ROUNDS), default=2)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "fmnist_recipe_sweep")
    parser.add_argument("--only", nargs="*", default=None, help="variant names (default: the whole round)")
    args = parser.parse_args(argv)
    runs = {k: v for k, v in ROUNDS[args.round].items() if not args.only or k in args.only}
    started, procs = time.perf_counter(), {}
    for name, (recipe, sets) in runs.items():
        command = [sys.executable, "-m", "cka_probe", "train", "--config", recipe, "--no-progress"]
        for value in ["train_samples=null", "val_samples=null", f"device={args.device}",
                      f"output_dir={args.out / name}", *sets]:  # fmt: skip
            command += ["--set", value]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        procs[name] = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for proc in procs.values():
        proc.wait()
    rows = {}
    for name, proc in procs.items():
        metrics = args.out / name / "metrics.jsonl"
        history = [json.loads(line) for line in metrics.read_text().splitlines()] if metrics.exists() else []
        rows[name] = [(h["epoch"], h["val"]["top1"], round(h["train"]["ce"], 3), h["seconds"]) for h in history]
        print(f"{name}: {'failed ' if proc.returncode else ''}(epoch, test top-1, train CE, seconds) {rows[name]}")
    (args.out / "sweep.json").write_text(json.dumps(rows, indent=1))
    print(f"{len(runs)} variants in {time.perf_counter() - started:.0f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
