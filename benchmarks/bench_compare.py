"""Benchmark: the cost of ``compare`` over the two bare forward passes it cannot avoid.

One process, the same 128 embedded probe images (each model gets its own preprocessing), MobileNetV2
and ViT-S with seeded random weights (the cost does not depend on the weights). It measures:

* bare: ``model_a(x_a)`` and ``model_b(x_b)`` under ``torch.inference_mode``: the floor;
* cka-probe engine: the same two passes with every activation hooked and pooled, then the 35 x 12
  linear-CKA matrix (exactly what ``compare`` does once models and images are ready);
* cka-probe compare(): the whole library call, model construction and preprocessing included, with
  the feature cache off (with it, a second call skips both forward passes);
* pytorch-cka and torch-cka, when installed (``pip install -e ".[bench]"``), on the same images and
  the same layers. Both flatten the features instead of averaging them over space, so their numbers
  differ from the paper's estimator; only their cost is compared here.

Wall time is the best of ``--repeats`` interleaved rounds (bare, engine, compare(), bare, ...). Peak memory is the rise of the process's peak resident
set (VmHWM, reset before each run through /proc/self/clear_refs) over the resident set before it,
so the models and images, which every variant shares, are not counted. Linux only.

Run:  python benchmarks/bench_compare.py [--repeats 2] [--n 128]
"""

from __future__ import annotations

import argparse
import copy
import ctypes
import gc
import time
from pathlib import Path

import torch

from cka_probe import cka_matrix
from cka_probe.data import batches, load_probe_set
from cka_probe.engine import extract_features
from cka_probe.jobs import compare
from cka_probe.models import load_model, transform_for

_LIBC = ctypes.CDLL("libc.so.6")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure_once(fn) -> tuple[float, float, object]:
    """Wall time (s), the peak-RSS rise over the RSS before the run (MiB), and the result."""
    gc.collect()
    _LIBC.malloc_trim(0)
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = _status_kib("VmRSS")
    start = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - start
    return seconds, (_status_kib("VmHWM") - before) / 1024, result


def run_child(script: str, argv: list[str], threads: int) -> tuple[dict | None, str]:
    """Run ``python SCRIPT ARGV`` in a fresh process with torch's and the BLAS libraries' threads set to
    ``threads`` (SciPy's OpenBLAS forms Grams with one torch thread); ``(the JSON of its last output line, "")``,
    or ``(None, the last line of its errors)`` when it fails."""
    import json
    import os
    import subprocess
    import sys

    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "OPENBLAS_NUM_THREADS": str(threads)}
    done = subprocess.run([sys.executable, script, *argv], check=False, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        return None, (done.stderr.strip().splitlines() or ["no output"])[-1]
    return json.loads(done.stdout.strip().splitlines()[-1]), ""


def measure_rounds(variants: dict, rounds: int) -> dict[str, tuple[float, float, object]]:
    """Each variant once per round, interleaved, so that a slow spell of the machine hits all of them;
    best time and largest peak per variant."""
    best: dict[str, list] = {name: [float("inf"), 0.0, None] for name in variants}
    for _ in range(rounds):
        for name, fn in variants.items():
            seconds, mib, result = measure_once(fn)
            best[name][0] = min(best[name][0], seconds)
            best[name][1] = max(best[name][1], mib)
            best[name][2] = result
    return {name: tuple(v) for name, v in best.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds; the best of each is shown")
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)

    loaded_a = load_model("mobilenetv2", weights="random", seed=0)
    loaded_b = load_model("vit_s", weights="random", seed=0)
    probe = load_probe_set("embedded", n=args.n, seed=0)
    x_a = next(iter(batches(probe, transform_for(loaded_a), args.n)))[0]
    x_b = next(iter(batches(probe, transform_for(loaded_b), args.n)))[0]
    model_a, model_b = loaded_a.model, loaded_b.model
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, n = {args.n}, "
        f"mobilenetv2 vs vit_s, best of {args.repeats}"
    )

    def bare():
        with torch.inference_mode():
            model_a(x_a)
            model_b(x_b)

    def engine():
        ext_a = extract_features(model_a, [x_a], progress=False)
        ext_b = extract_features(model_b, [x_b], progress=False)
        return cka_matrix(ext_a.features, ext_b.features)

    def whole_call():
        return compare(
            "mobilenetv2", "vit_s", "embedded", n=args.n, weights="random", progress=False, device="cpu", cache=False
        )

    bare(), engine()  # warm-up: first-call allocations and lazy initialisation
    results = measure_rounds(
        {"bare forward passes": bare, "cka-probe engine": engine, "cka-probe compare()": whole_call}, args.repeats
    )
    rows = Table()
    for name, (seconds, mib, _) in results.items():
        rows.append((name, seconds, mib))
    matrix = results["cka-probe engine"][2]
    assert matrix.values.shape == (35, 12), matrix.values.shape

    if not args.skip_peers:
        layers_a, layers_b = list(matrix.rows), list(matrix.cols)
        loader = [(x_a, torch.zeros(len(x_a)))]  # peers feed one tensor to both models
        _peers(rows, model_a, model_b, layers_a, layers_b, loader, x_a, args.repeats)


class Table(list):
    """Rows printed as they are measured, each with its ratios to the first row (the bare passes)."""

    def append(self, row) -> None:
        if not self:
            print(f"{'':28} {'wall s':>8} {'x bare':>7} {'peak MiB':>9} {'x bare':>7}", flush=True)
        super().append(row)
        name, seconds, mib = row
        base_time, base_mem = self[0][1], self[0][2]
        print(
            f"{name:28} {seconds:8.2f} {seconds / base_time:7.2f} {mib:9.0f} {mib / max(base_mem, 1e-9):7.2f}",
            flush=True,
        )


def _peers(rows, model_a, model_b, layers_a, layers_b, loader, x, repeats):
    """pytorch-cka and torch-cka on one tensor fed to both models (their interface), beside a bare pass of it."""

    def bare_one_tensor():
        with torch.inference_mode():
            model_a(x)
            model_b(x)

    variants = {"  bare, one tensor for both": bare_one_tensor}
    dataloader = loader_as_dataloader(loader)  # pytorch-cka reads a list as several data loaders
    try:
        import cka as pytorch_cka  # pytorch-cka

        variants["pytorch-cka"] = lambda: pytorch_cka.compute_cka(
            model_a, model_b, dataloader, layers=layers_a, model2_layers=layers_b, device="cpu", progress=False
        )
    except ImportError:
        print("pytorch-cka is not installed (pip install -e '.[bench]'); skipped")
    for name, (seconds, mib, _) in measure_rounds(variants, repeats).items():
        rows.append((name, seconds, mib))
    try:
        from torch_cka import CKA as TorchCKA  # torch-cka
    except ImportError:
        print("torch-cka is not installed (pip install -e '.[bench]'); skipped")
        return
    # torch-cka never removes its hooks: it gets copies, made outside the timed region. It runs the
    # forward passes with autograd on and keeps every hooked output; one run is enough to show it.
    copy_a, copy_b = copy.deepcopy(model_a), copy.deepcopy(model_b)

    def run_torch_cka():
        peer = TorchCKA(copy_a, copy_b, model1_layers=layers_a, model2_layers=layers_b, device="cpu")
        peer.compare(dataloader)
        return peer.hsic_matrix

    rows.append(("torch-cka", *measure_once(run_torch_cka)[:2]))


def loader_as_dataloader(loader):
    images = loader[0][0]
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))
    return torch.utils.data.DataLoader(dataset, batch_size=len(images))


if __name__ == "__main__":
    main()
