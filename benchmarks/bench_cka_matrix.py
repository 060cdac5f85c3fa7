"""Benchmark: vectorized ``cka_matrix`` against a pairwise loop of the same estimator.

For L x L layers at n examples (layer widths cycling through typical post-activation sizes), it
prints the wall time of ``cka_matrix`` (all pairs in one matrix product), the time of a pairwise
loop that centres two Gram matrices per pair (as per-pair tools do; at large n a subset of pairs
is timed and scaled to L x L, which is said in the output), the speed-up, and the achieved
float64 GFLOP/s next to a plain ``torch.matmul`` of the same shape on this machine.

Run:  python benchmarks/bench_cka_matrix.py [--layers 100] [--n 128 1024]
"""

from __future__ import annotations

import argparse
import time

import torch

from cka_probe import cka_matrix
from cka_probe.math.cka import _cka_from_grams
from cka_probe.math.kernels import gram_linear

WIDTHS = (64, 128, 256, 384, 512, 768, 1024, 1536)


def make_layers(num_layers: int, n: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, WIDTHS[i % len(WIDTHS)], generator=g) for i in range(num_layers)]


def best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def vectorized_flops(feats_a, feats_b, n: int) -> float:
    grams = sum(2.0 * n * n * f.shape[1] for f in list(feats_a) + list(feats_b))
    return grams + 2.0 * len(feats_a) * len(feats_b) * n * n


def pairwise_loop(feats_a, feats_b, pairs):
    return [float(_cka_from_grams(gram_linear(feats_a[i]), gram_linear(feats_b[j]), unbiased=False)) for i, j in pairs]


def run(num_layers: int, n: int, max_pairs: int) -> None:
    feats_a, feats_b = make_layers(num_layers, n, 0), make_layers(num_layers, n, 1)
    vec_time = best_of(lambda: cka_matrix(feats_a, feats_b), repeats=3)
    matrix = cka_matrix(feats_a, feats_b)

    all_pairs = [(i, j) for i in range(num_layers) for j in range(num_layers)]
    step = max(1, len(all_pairs) // max_pairs)
    pairs = all_pairs[::step]
    loop_subset = best_of(lambda: pairwise_loop(feats_a, feats_b, pairs), repeats=1)
    loop_time = loop_subset * len(all_pairs) / len(pairs)
    values = pairwise_loop(feats_a, feats_b, pairs[:20])
    max_diff = max(abs(v - float(matrix[i, j])) for v, (i, j) in zip(values, pairs[:20]))

    flops = vectorized_flops(feats_a, feats_b, n)
    stack_a = torch.randn(num_layers, n * n, dtype=torch.float64)
    stack_b = torch.randn(num_layers, n * n, dtype=torch.float64)
    mm_time = best_of(lambda: stack_a @ stack_b.T, repeats=3)
    mm_flops = 2.0 * num_layers * num_layers * n * n

    scaled = "" if len(pairs) == len(all_pairs) else f" (timed on {len(pairs)} of {len(all_pairs)} pairs, scaled)"
    print(f"{num_layers} x {num_layers} layers, n = {n}")
    print(f"  cka_matrix (vectorized) : {vec_time:8.3f} s   {flops / vec_time / 1e9:7.1f} GFLOP/s float64")
    print(f"  pairwise loop           : {loop_time:8.3f} s{scaled}")
    print(f"  speed-up                : {loop_time / vec_time:8.1f} x")
    print(f"  plain torch.matmul      : {mm_time:8.3f} s   {mm_flops / mm_time / 1e9:7.1f} GFLOP/s float64 "
          f"({num_layers} x {n * n}) @ ({n * n} x {num_layers})")
    print(f"  max |vectorized - loop| : {max_diff:.2e}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=100)
    parser.add_argument("--n", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--max-pairs", type=int, default=400, help="pairs timed in the loop before scaling")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for n in args.n:
        run(args.layers, n, args.max_pairs)


if __name__ == "__main__":
    main()
