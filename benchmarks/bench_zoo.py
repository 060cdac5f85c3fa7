"""Benchmark: a zoo job's cost over its models' bare forward passes, its warm rerun, and the all-pairs stage.

1. For each of ten timm models (seeded random weights; cost does not depend on them) it times one bare
   forward pass of the probe images under ``torch.inference_mode`` (model built and images prepared
   beforehand), then runs the zoo job cold (empty feature cache) and prints the zoo's wall time over the
   sum of the bare passes, next to what a pairwise tool pays: every ordered pair runs both models again,
   ``sum over pairs (t_a + t_b)`` = ``2 (N - 1)`` times the sum of the bare passes.
2. It reruns the job warm: once as is (the job is complete: nothing to do) and once into a fresh output
   directory with every model's features in the cache (the pair stage and all outputs are redone).
3. It times the all-pairs CKA stage alone on synthetic features, 1,000+ layers at n = 128, and prints
   its float64 GFLOP/s next to a plain ``torch.matmul`` of the same shape.

Run:  python benchmarks/bench_zoo.py [--n 128] [--layers 1000]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch

from cka_probe.data import batches, load_probe_set
from cka_probe.engine.estimation import CKASettings, pair_tables
from cka_probe.jobs import parse_job_config, run_zoo
from cka_probe.models import load_model, transform_for

MODELS = [
    "resnet18",
    "mobilenetv2_100",
    "efficientnet_b0",
    "regnetx_002",
    "convnext_atto",
    "deit_tiny_patch16_224",
    "levit_128s",
    "mobilevit_xs",
    "resmlp_12_224",
    "mixer_s16_224",
]


def bare_forward_seconds(name: str, n: int) -> float:
    loaded = load_model(name, weights="random", seed=0)
    probe = load_probe_set("embedded", n=n, seed=0)
    images = next(iter(batches(probe, transform_for(loaded), n)))[0]
    with torch.inference_mode():
        start = time.perf_counter()
        loaded.model(images)
        return time.perf_counter() - start


def all_pairs_stage(num_layers: int, n: int, layers_per_model: int = 50) -> tuple[float, float, float]:
    widths = (64, 128, 256, 384, 512, 768, 1024, 1536)
    g = torch.Generator().manual_seed(0)
    models = {}
    for m in range(num_layers // layers_per_model):
        feats = {
            f"layer{i}": torch.randn(n, widths[(m + i) % len(widths)], generator=g) for i in range(layers_per_model)
        }
        models[f"model{m}"] = feats
    labels = list(models)
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1 :]]
    start = time.perf_counter()
    pair_tables(models, pairs, CKASettings())
    seconds = time.perf_counter() - start
    total_layers = layers_per_model * len(labels)
    flops = sum(2.0 * n * n * t.shape[1] for feats in models.values() for t in feats.values())
    flops += 2.0 * total_layers * total_layers * n * n
    stack = torch.randn(total_layers, n * n, dtype=torch.float64)
    start = time.perf_counter()
    stack @ stack.T
    mm_seconds = time.perf_counter() - start
    return seconds, flops / seconds / 1e9, 2.0 * total_layers * total_layers * n * n / mm_seconds / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--layers", type=int, default=1000)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, n = {args.n}, {len(MODELS)} models")

    bare = {name: bare_forward_seconds(name, args.n) for name in MODELS}
    bare_total = sum(bare.values())
    work = Path(tempfile.mkdtemp(prefix="cka-probe-bench-zoo-"))
    config = parse_job_config(
        {
            "weights": "random",
            "data": {"source": "embedded", "n": args.n},
            "models": MODELS,
            "output": {"per_pair": False},
        },
        "zoo",
    )
    try:
        start = time.perf_counter()
        cold = run_zoo(config, output_dir=work / "out", cache=work / "cache", progress=False)
        cold_seconds = time.perf_counter() - start
        start = time.perf_counter()
        done = run_zoo(config, output_dir=work / "out", cache=work / "cache", progress=False)
        complete_seconds = time.perf_counter() - start
        start = time.perf_counter()
        cached = run_zoo(config, output_dir=work / "out2", cache=work / "cache", progress=False)
        cached_seconds = time.perf_counter() - start
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert done.up_to_date and bool(cached.models["from_cache"].all())
    failed = cold.models[cold.models["status"] != "ok"]
    assert failed.empty, failed

    n_models = len(MODELS)
    pairwise = 2 * (n_models - 1) * bare_total
    print(f"  sum of bare forward passes        : {bare_total:8.2f} s")
    print(
        f"  zoo, cold (empty cache)           : {cold_seconds:8.2f} s   {cold_seconds / bare_total:5.2f} x the bare passes"
        f"   ({sum(map(len, cold.manifest['layers'].values()))} layers, {cold.manifest['pairs']} pairs)"
    )
    print(
        f"  pairwise tool, {n_models * (n_models - 1)} ordered pairs     : {pairwise:8.2f} s   "
        f"{pairwise / bare_total:5.2f} x (estimated: both models rerun per pair)"
    )
    print(
        f"  warm rerun, job complete          : {complete_seconds:8.3f} s   {cold_seconds / complete_seconds:7.0f} x faster than cold"
    )
    print(
        f"  warm rerun, fresh outputs, cached : {cached_seconds:8.3f} s   {cold_seconds / cached_seconds:7.1f} x faster than cold"
    )
    seconds, gflops, mm_gflops = all_pairs_stage(args.layers, args.n)
    print(
        f"  all-pairs stage, {args.layers} layers, n={args.n}: {seconds:6.2f} s   {gflops:6.1f} GFLOP/s float64 "
        f"(plain matmul of the Gram stack: {mm_gflops:.1f} GFLOP/s)"
    )


if __name__ == "__main__":
    main()
