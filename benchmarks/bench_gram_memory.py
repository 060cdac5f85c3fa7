"""Benchmark: the memory a flattened layer's Gram takes beyond its activation, as the spatial size grows.

``--pool flatten`` reduces each hooked activation ``(n, C, H, W)`` at once to the ``(n, n)`` Gram of its centred,
flattened features (:func:`cka_probe.capture.pooling.flattened_gram`), block by block. The extra memory should
not grow with ``H W``: blocks of at most 8 MiB (float64) or 4096 columns (float32), plus the Gram. Beside it, the
plain way (flatten, centre in float64, ``X_c @ X_c.T``), which copies the whole activation in float64.

For each size, a fresh process allocates a random float32 activation (n = 128, C = 32), then measures the rise
of its peak resident set over its resident set during one call. Linux only.

Run:  python benchmarks/bench_gram_memory.py [--sizes 28,56,112,224] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compare import run_child  # noqa: E402

N, C = 128, 32


def _child(variant: str, size: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from bench_compare import measure_once

    from cka_probe.capture.pooling import flattened_gram

    activation = torch.rand(N, C, size, size, generator=torch.Generator().manual_seed(0))
    if variant == "plain float64":

        def run():
            x = activation.reshape(N, -1).double()
            x -= x.mean(dim=0)
            return x @ x.T
    else:
        precision = variant.removeprefix("cka-probe ")

        def run():
            return flattened_gram(activation, "NCHW", precision=precision)[0]

    flattened_gram(activation[:2, :, :2, :2], "NCHW")  # load what the first call loads, outside the measure
    seconds, mib, _ = measure_once(run)
    return {"variant": variant, "size": size, "seconds": seconds, "peak_mib": mib}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="28,56,112,224", help="comma-separated H = W")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.threads)))
        return
    print(f"n = {N}, C = {C}, float32 activations, {args.threads} thread(s); peak rise during one call")
    print(f"{'H = W':>6} {'activation MiB':>15} {'variant':>18} {'peak rise MiB':>14} {'s':>7}")
    for size in (int(v) for v in args.sizes.split(",") if v.strip()):
        for variant in ("cka-probe float64", "cka-probe float32", "plain float64"):
            row, error = run_child(
                __file__, ["--child", variant, str(size), "--threads", str(args.threads)], args.threads
            )
            if row is None:
                raise SystemExit(f"{variant}, H = W = {size} failed: {error}")
            activation = N * C * size * size * 4 / 2**20
            print(
                f"{size:>6} {activation:15.0f} {variant:>18} {row['peak_mib']:14.1f} {row['seconds']:7.2f}", flush=True
            )


if __name__ == "__main__":
    main()
