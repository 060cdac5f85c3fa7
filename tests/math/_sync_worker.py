"""One process of the two-process test of ``MinibatchCKA.sync`` (started by tests/math/test_streaming.py).

``main(rank, world_size, store_file, out_file)``: rank r updates with batches r, r + W, ... of the layers
that ``batches()`` draws, syncs over gloo (file store), and saves its statistics and result.
Also runnable as ``python _sync_worker.py RANK WORLD_SIZE STORE_FILE OUT_FILE``.
"""

from __future__ import annotations

import sys

import torch
import torch.distributed as dist

from cka_probe.math import MinibatchCKA

NUM_BATCHES = 4


def batches() -> list[tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(7)
    out = []
    for size in (10, 12, 9, 11):
        base = torch.randn(size, 3, generator=g, dtype=torch.float64)
        feats_a = {"a0": base @ torch.randn(3, 5, generator=g, dtype=torch.float64), "a1": torch.tanh(base)}
        feats_b = {"b0": base[:, :2] + 0.3 * torch.randn(size, 2, generator=g, dtype=torch.float64)}
        out.append((feats_a, feats_b))
    return out


def main(rank: int, world_size: int, store: str, out_file: str) -> None:
    torch.set_num_threads(1)  # a forked child must not enter the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world_size)
    try:
        metric = MinibatchCKA()
        for feats_a, feats_b in batches()[rank::world_size]:
            metric.update(feats_a, feats_b)
        metric.sync()
        result = {**metric.statistics(), "cka": metric.compute().values}
    finally:
        dist.destroy_process_group()
    torch.save(result, out_file)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4])
