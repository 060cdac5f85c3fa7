"""Benchmark: the cost of ``compare`` over the two bare forward passes it cannot avoid.

One process, the same 128 embedded probe images (each model gets its own preprocessing), MobileNetV2
and ViT-S with seeded random weights (the cost does not depend on the weights). It measures:

* bare: ``model_a(x_a)`` and ``model_b(x_b)`` under ``torch.inference_mode``: the floor;
* cka-probe engine: the same two passes with every activation hooked and pooled, then the 35 x 12
  linear-CKA matrix (exactly what ``compare`` does once models and images are ready);
* cka-probe compare(): the whole library call, model construction and preprocessing included;
* pytorch-cka and torch-cka, when installed (``pip install -e ".[bench]"``), on the same images and
  the same layers. Both flatten the features instead of averaging them over space, so their numbers
  differ from the paper's estimator; only their cost is compared here.

Wall time is the best of ``--repeats`` runs. Peak memory is the rise of the process's peak resident
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
from cka_probe.analysis import compare, extract_features
from cka_probe.data import batches, load_probe_set
from cka_probe.models import load_model, transform_for

_LIBC = ctypes.CDLL("libc.so.6")


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def measure(fn, repeats: int) -> tuple[float, float, object]:
    """Best wall time (s), the largest peak-RSS rise (MiB) over the runs, and the last result."""
    best, peak, result = float("inf"), 0.0, None
    for _ in range(repeats):
        result = None
        gc.collect()
        _LIBC.malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        before = _status_kib("VmRSS")
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
        peak = max(peak, (_status_kib("VmHWM") - before) / 1024)
    return best, peak, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--skip-peers", action="store_true")
    args = parser.parse_args()
    torch.manual_seed(0)

    loaded_a = load_model("mobilenetv2", weights="random", seed=0)
    loaded_b = load_model("vit_s", weights="random", seed=0)
    probe = load_probe_set("embedded", n=args.n, seed=0)
    x_a = next(iter(batches(probe, transform_for(loaded_a), args.n)))[0]
    x_b = next(iter(batches(probe, transform_for(loaded_b), args.n)))[0]
    model_a, model_b = loaded_a.model, loaded_b.model
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n = {args.n}, "
          f"mobilenetv2 vs vit_s, best of {args.repeats}")

    def bare():
        with torch.inference_mode():
            model_a(x_a)
            model_b(x_b)

    def engine():
        ext_a = extract_features(model_a, [x_a], progress=False)
        ext_b = extract_features(model_b, [x_b], progress=False)
        return cka_matrix(ext_a.features, ext_b.features)

    def whole_call():
        return compare("mobilenetv2", "vit_s", "embedded", n=args.n, weights="random", progress=False, device="cpu")

    bare(), engine()  # warm-up: first-call allocations and lazy initialisation
    rows = [("bare forward passes", *measure(bare, args.repeats)[:2])]
    t, m, matrix = measure(engine, args.repeats)
    rows.append(("cka-probe engine", t, m))
    assert matrix.values.shape == (35, 12), matrix.values.shape
    rows.append(("cka-probe compare()", *measure(whole_call, args.repeats)[:2]))

    if not args.skip_peers:
        layers_a, layers_b = list(matrix.rows), list(matrix.cols)
        loader = [(x_a, torch.zeros(len(x_a)))]  # peers feed one tensor to both models
        rows.extend(_peers(model_a, model_b, layers_a, layers_b, loader, x_a, args.repeats))

    base_time, base_mem = rows[0][1], rows[0][2]
    print(f"{'':28} {'wall s':>8} {'x bare':>7} {'peak MiB':>9} {'x bare':>7}")
    for name, seconds, mib in rows:
        print(f"{name:28} {seconds:8.2f} {seconds / base_time:7.2f} {mib:9.0f} {mib / max(base_mem, 1e-9):7.2f}")


def _peers(model_a, model_b, layers_a, layers_b, loader, x, repeats):
    rows = []
    bare_same_input = None

    def bare_one_tensor():
        with torch.inference_mode():
            model_a(x)
            model_b(x)

    try:
        import cka as pytorch_cka  # pytorch-cka

        bare_same_input = measure(bare_one_tensor, repeats)[:2]
        rows.append(("  bare, one tensor for both", *bare_same_input))

        def run_pytorch_cka():
            return pytorch_cka.compute_cka(model_a, model_b, loader, layers=layers_a, model2_layers=layers_b,
                                           device="cpu", progress=False)

        rows.append(("pytorch-cka", *measure(run_pytorch_cka, repeats)[:2]))
    except ImportError:
        print("pytorch-cka is not installed (pip install -e '.[bench]'); skipped")
    try:
        from torch_cka import CKA as TorchCKA  # torch-cka

        if bare_same_input is None:
            rows.append(("  bare, one tensor for both", *measure(bare_one_tensor, repeats)[:2]))

        # torch-cka never removes its hooks: it gets copies, made outside the timed region
        copy_a, copy_b = copy.deepcopy(model_a), copy.deepcopy(model_b)

        def run_torch_cka():
            peer = TorchCKA(copy_a, copy_b, model1_layers=layers_a, model2_layers=layers_b, device="cpu")
            peer.compare(loader_as_dataloader(loader))
            return peer.hsic_matrix

        rows.append(("torch-cka", *measure(run_torch_cka, 1)[:2]))
    except ImportError:
        print("torch-cka is not installed (pip install -e '.[bench]'); skipped")
    return rows


def loader_as_dataloader(loader):
    images = loader[0][0]
    dataset = torch.utils.data.TensorDataset(images, torch.zeros(len(images)))
    return torch.utils.data.DataLoader(dataset, batch_size=len(images))


if __name__ == "__main__":
    main()
