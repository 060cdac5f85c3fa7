"""Benchmark: all-pairs CKA of cka-probe against pytorch-cka's vectorised ``cka_from_features``.

Side by side in one run, on the same features and in the same precision:

* ``cka_matrix(feats_a, feats_b, unbiased=True, dtype=...)`` of cka-probe, and its Gram stage alone
  (the packed centred Grams of both sides, which the all-pairs product then multiplies);
* ``cka.cka_from_features(feats_a, feats_b)`` of pytorch-cka 1.1.3, which computes the same estimator
  (Song et al.'s unbiased HSIC; it clamps the CKA to [0, 1], so values are compared after clamping ours);
* a plain ``torch.matmul`` of the shape of the all-pairs product, for the machine's FLOP rate.

Cases: L x L layers with widths cycling through 64-1024, at n = 128 and n = 512 (L = 50), and L = 1000 at
n = 128; each in float64 and float32 (features drawn in float32, so that the float64 run is exact on the
same data and the float32 error of each tool is measured against its own float64 result).

FLOP counts: "dense" counts what a plain implementation does (``2 n^2 d`` per Gram plus ``2 L_a L_b n^2``
for the product), the same count for both tools, so dense GFLOP/s compare like with like. "Executed" counts
what cka-probe runs: the upper triangle of each Gram (one symmetric rank-k update per layer on the CPU, block
rows of products on CUDA), and the product over the strict upper triangles (``L_a L_b n (n - 1)``; over
whole matrices, ``2 L_a L_b n^2``, where cka_matrix does not pack them: few layers on CUDA); that rate is
compared with the plain matmul's.

Run:  python benchmarks/bench_cka_matrix.py [--device cpu|cuda] [--repeats 3] [--cases 50x128 50x512 1000x128]
"""

from __future__ import annotations

import argparse
import gc
import time

import torch

from cka_probe.math import cka_matrix
from cka_probe.math.engine import _PACK_RATIO, _centered_stacks

WIDTHS = (64, 128, 256, 384, 512, 768, 1024)


def make_layers(num_layers: int, n: int, seed: int, device: str) -> list[torch.Tensor]:
    """Post-ReLU-like float32 layers sharing a 32-dimensional signal (so CKA values spread over [0, 1])."""
    g = torch.Generator().manual_seed(seed)
    signal = torch.randn(n, 32, generator=g)
    layers = []
    for i in range(num_layers):
        d = WIDTHS[i % len(WIDTHS)]
        mixed = signal @ torch.randn(32, d, generator=g) / 4 + (1 + i % 5) * torch.randn(n, d, generator=g) / 4
        layers.append(torch.relu(mixed).to(device))
    return layers


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> tuple[float, object]:
    synchronize(device)
    start = time.perf_counter()
    result = fn()
    synchronize(device)
    return time.perf_counter() - start, result


def dense_flops(feats_a, feats_b, n: int) -> float:
    grams = sum(2.0 * n * n * f.shape[1] for f in list(feats_a) + list(feats_b))
    return grams + 2.0 * len(feats_a) * len(feats_b) * n * n


def executed_flops(feats_a, feats_b, n: int, device: str, pack: bool) -> float:
    if device == "cpu":  # one symmetric rank-k update per layer: the upper triangle, diagonal included
        per_width = float(n * (n + 1))
    else:  # block rows of max(64, n // 8) rows over the upper triangle
        step = max(64, n // 8)
        per_width = sum(2.0 * min(step, n - start) * (n - start) for start in range(0, n, step))
    grams = sum(per_width * f.shape[1] for f in list(feats_a) + list(feats_b))
    product_width = n * (n - 1) / 2 if pack else n * n  # strict upper triangles, or whole matrices
    return grams + 2.0 * len(feats_a) * len(feats_b) * product_width


def run_case(num_layers: int, n: int, dtype: torch.dtype, device: str, repeats: int, base) -> dict:
    from cka import cka_from_features  # pytorch-cka 1.1.3

    feats_a = [f.to(dtype) for f in base[0]]
    feats_b = [f.to(dtype) for f in base[1]]
    names_a, names_b = [f"a{i}" for i in range(num_layers)], [f"b{i}" for i in range(num_layers)]
    m = n * (n - 1) // 2
    pack = device == "cpu" or num_layers * num_layers > _PACK_RATIO * 2 * num_layers  # as cka_matrix decides
    left = torch.randn(num_layers, m, dtype=dtype, device=device)
    right = torch.randn(num_layers, m, dtype=dtype, device=device)
    calls = {
        "ours": lambda: cka_matrix(feats_a, feats_b, unbiased=True, dtype=dtype),
        "theirs": lambda: cka_from_features(feats_a, feats_b),
        # the Gram stage alone: packed centred Grams of both sides (what the product then multiplies)
        "stage": lambda: _centered_stacks([(feats_a, names_a), (feats_b, names_b)], "linear", True, 1.0, dtype, pack),
        "matmul": lambda: left @ right.T,
    }

    best = {"ours": float("inf"), "stage": float("inf"), "theirs": float("inf"), "matmul": float("inf")}
    results = {}
    for _ in range(repeats):  # interleaved, so that a busy machine slows both tools alike
        for name, fn in calls.items():
            elapsed, result = timed(fn, device)
            best[name] = min(best[name], elapsed)
            if name in ("ours", "theirs"):
                results[name] = result.cpu()
            del result
            gc.collect()
    return {
        "time": best,
        "values": results,
        "dense": dense_flops(feats_a, feats_b, n),
        "executed": executed_flops(feats_a, feats_b, n, device, pack),
        "matmul_flops": 2.0 * num_layers * num_layers * m,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", nargs="+", default=["50x128", "50x512", "1000x128"], help="LAYERSxN")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available")
    import importlib.metadata

    where = torch.cuda.get_device_name() if args.device == "cuda" else f"{torch.get_num_threads()} CPU threads"
    print(f"torch {torch.__version__}, pytorch-cka {importlib.metadata.version('pytorch-cka')}, {where}")
    rows = []
    for case in args.cases:
        num_layers, n = (int(v) for v in case.split("x"))
        base = (make_layers(num_layers, n, 0, args.device), make_layers(num_layers, n, 1, args.device))
        reports = {
            dtype: run_case(num_layers, n, dtype, args.device, args.repeats, base)
            for dtype in (torch.float64, torch.float32)
        }
        exact_ours = reports[torch.float64]["values"]["ours"]
        exact_theirs = reports[torch.float64]["values"]["theirs"]
        for dtype, report in reports.items():
            t = report["time"]
            ours, theirs = report["values"]["ours"], report["values"]["theirs"]
            rows.append(
                {
                    "case": f"{num_layers}x{num_layers}, n={n}",
                    "precision": str(dtype).removeprefix("torch."),
                    "ours_s": t["ours"],
                    "stage_s": t["stage"],
                    "theirs_s": t["theirs"],
                    "speedup": t["theirs"] / t["ours"],
                    "dense_gflops_ours": report["dense"] / t["ours"] / 1e9,
                    "dense_gflops_theirs": report["dense"] / t["theirs"] / 1e9,
                    "executed_gflops": report["executed"] / t["ours"] / 1e9,
                    "matmul_gflops": report["matmul_flops"] / t["matmul"] / 1e9,
                    "agree": float((ours.clamp(0, 1) - theirs).abs().max()),
                    "err_ours": float((ours - exact_ours).abs().max()),
                    "err_theirs": float((theirs - exact_theirs).abs().max()),
                }
            )
            r = rows[-1]
            print(
                f"{r['case']:>20} {r['precision']}: cka-probe {r['ours_s']:.3f} s (Gram stage {r['stage_s']:.3f} s), "
                f"pytorch-cka {r['theirs_s']:.3f} s, {r['speedup']:.2f}x; executed {r['executed_gflops']:.1f} "
                f"GFLOP/s vs matmul {r['matmul_gflops']:.1f}",
                flush=True,
            )
        del base, reports
        gc.collect()

    print()
    print(
        "| layers, n | precision | cka-probe (s) | Gram stage (s) | pytorch-cka (s) | speed-up | dense GFLOP/s "
        "cka-probe / pytorch-cka | executed GFLOP/s (matmul) | max abs diff to pytorch-cka | max error vs float64 "
        "cka-probe / pytorch-cka |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['case']} | {r['precision']} | {r['ours_s']:.3f} | {r['stage_s']:.3f} | {r['theirs_s']:.3f} | "
            f"{r['speedup']:.2f}x | {r['dense_gflops_ours']:.1f} / {r['dense_gflops_theirs']:.1f} | "
            f"{r['executed_gflops']:.1f} ({r['matmul_gflops']:.1f}) | {r['agree']:.1e} | "
            f"{r['err_ours']:.1e} / {r['err_theirs']:.1e} |"
        )


if __name__ == "__main__":
    main()
