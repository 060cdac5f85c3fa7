"""Benchmark: memory of the minibatch flattened path as n grows, through ``compare()`` (what the CLI runs).

With ``--pool flatten --estimator minibatch``, each model runs over all batches before the next, so every
batch's Grams must wait until the pair is computed. cka-probe writes them to disk as the pass goes
(:class:`cka_probe.engine.spool.GramSpool`) and reads one batch at a time: memory should not grow with n.
Beside it, the same call with the Grams held in memory (``SPOOL_FROM_BATCHES`` set out of reach, as before
spooling), which grows as ``L n b`` float64 numbers.

Models: timm's ``test_resnet`` against ``test_vit`` (random weights; 12 x 6 flattened layers at 160 x 160),
Fashion-MNIST probe images (its test split holds 10,000), batches of 128, no feature cache. Each row runs in a
fresh process; peak memory is the rise of the process's peak resident set over the resident set before the
call (models built inside the call). Linux only.

Run:  python benchmarks/bench_spool.py [--n 1024,4096,9984] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compare import run_child  # noqa: E402

MODELS = ("test_resnet", "test_vit")
BATCH = 128


def _child(variant: str, n: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    from bench_compare import measure_once

    import cka_probe.engine.features as features
    from cka_probe.jobs import compare

    if variant == "held":
        features.SPOOL_FROM_BATCHES = 10**9  # every Gram kept in memory
    seconds, mib, result = measure_once(
        lambda: compare(
            *MODELS,
            "fashion-mnist",
            n=n,
            batch_size=BATCH,
            pool="flatten",
            estimator="minibatch",
            weights="random",
            cache=False,
            progress=False,
            device="cpu",
        )
    )
    layers = len(result.matrix.index) + len(result.matrix.columns)
    return {
        "variant": variant,
        "n": n,
        "seconds": seconds,
        "peak_mib": mib,
        "layers": layers,
        "value": result.matrix.to_numpy().sum(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", default="1024,4096,9984", help="comma-separated numbers of probe images")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", nargs=2, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child[0], int(args.child[1]), args.threads)))
        return
    sizes = [int(v) for v in args.n.split(",") if v.strip()]
    print(f"{' vs '.join(MODELS)}, flattened, minibatch estimator, batches of {BATCH}, {args.threads} threads")
    print(f"{'variant':8} {'n':>6} {'wall s':>8} {'peak MiB':>9} {'Grams held, MiB':>16}")
    rows = []
    for n in sizes:
        for variant in ("spooled", "held"):
            row, error = run_child(__file__, ["--child", variant, str(n), "--threads", str(args.threads)], args.threads)
            if row is None:
                raise SystemExit(f"{variant}, n={n} failed: {error}")
            held = row["layers"] * n * BATCH * 8 / 2**20  # what keeping every batch's float64 Grams takes
            print(f"{variant:8} {n:>6} {row['seconds']:8.1f} {row['peak_mib']:9.0f} {held:16.0f}", flush=True)
            rows.append(row)
    values = {(r["n"]): set() for r in rows}
    for r in rows:
        values[r["n"]].add(round(r["value"], 9))
    print("same tables spooled and held:", all(len(v) == 1 for v in values.values()))


if __name__ == "__main__":
    main()
