"""Benchmark: flattened (un-pooled) CKA of MobileNetV2 against ViT-S, over the two bare forward passes and the peers.

Seeded random weights (the cost does not depend on them), every activation layer of both models (35 x 12),
probe images from Fashion-MNIST, each model with its own preprocessing. Variants, each in its own fresh
subprocess so that no variant inherits another's allocator state:

* bare: ``model_a(x_a)`` and ``model_b(x_b)`` under ``torch.inference_mode``, n images in one batch: the floor;
* cka-probe flatten: the same passes with every activation hooked (``FeatureRecorder(pool="flatten")``: each
  output becomes the batch's (n, n) float64 Gram at once), then the 35 x 12 linear-CKA matrix from the Grams
  (``cka_matrix`` on ``math.Gram``);
* pytorch-cka and torch-cka (``pip install -e ".[bench]"``) on the same layers: both flatten too, and hold every
  hooked activation of a batch. Their interface feeds one tensor to both models, so they are set beside
  "bare (one tensor)" (both models on ``x_a``);
* in-process: the bare passes and the flattened run (recorders, then the CKA matrix) alternating ``--rounds``
  times in one process, best of each: the time ratio without the spread between processes (no memory figure);
* cka-probe flatten, minibatch: n = 256, 512, 1024 images in batches of 128, streamed from the data set (decoded
  per batch), Grams taken after every batch (``FeatureRecorder.take_grams``) into ``MinibatchCKA``: memory must
  not grow with n.

Wall time: the run itself (models built and first images prepared beforehand; one warm-up pass of both
models on two images first). Peak memory: the rise of the process's peak resident set (VmHWM, reset through
/proc/self/clear_refs right before the run) over the resident set before it. Linux only.

Run:  python benchmarks/bench_flatten.py [--n 128] [--minibatch 256,512,1024] [--threads 2] [--rounds 3]
      [--skip torch-cka] [--precision float64|float32]
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from cka_probe._choices import PRECISIONS

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from bench_compare import measure_once, run_child  # noqa: E402  (one peak-memory method for every benchmark)

DATA = "fashion-mnist"
MODELS = ("mobilenetv2", "vit_s")
BASE_VARIANTS = ("bare", "cka-probe flatten", "bare (one tensor)", "pytorch-cka", "torch-cka", "in-process")


def _child(variant: str, n: int, batch_size: int, threads: int, rounds: int = 1, precision: str = "float64") -> dict:
    """Run one variant in this (fresh) process and return its measurements."""
    torch.set_num_threads(threads)
    from cka_probe import FeatureRecorder
    from cka_probe.data import batches, load_probe_set
    from cka_probe.math import Gram, MinibatchCKA, cka_matrix
    from cka_probe.models import load_model, transform_for

    loaded = [load_model(name, weights="random", seed=0) for name in MODELS]
    models = [m.model for m in loaded]
    first = load_probe_set(DATA, n=min(n, batch_size), seed=0)
    x_a, x_b = (next(iter(batches(first, transform_for(m), batch_size)))[0] for m in loaded)

    def bare():
        with torch.inference_mode():
            models[0](x_a)
            models[1](x_b)

    with torch.inference_mode():  # warm-up on two images: lazy initialisation, outside every measurement
        models[0](x_a[:2])
        models[1](x_b[:2])
    layers = [FeatureRecorder(m, pool="flatten").module_names for m in models]

    def flattened():
        recorders = [FeatureRecorder(m, pool="flatten", precision=precision) for m in models]
        with recorders[0], recorders[1], torch.inference_mode():
            models[0](x_a)
            models[1](x_b)
        grams = [{k: Gram(v[0]) for k, v in r.grams.items()} for r in recorders]
        return cka_matrix(grams[0], grams[1], dtype=precision).values.shape

    if variant == "bare":
        run = bare
    elif variant == "bare (one tensor)":

        def run():
            with torch.inference_mode():
                models[0](x_a)
                models[1](x_a)
    elif variant == "cka-probe flatten":
        run = flattened
    elif variant == "in-process":  # bare and flattened passes alternating in this one process: time only
        times = {"bare": [], "flatten": []}
        for _ in range(rounds):
            for name, fn in (("bare", bare), ("flatten", flattened)):
                start = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - start)
        return {
            "variant": variant,
            "n": n,
            "bare_seconds": min(times["bare"]),
            "seconds": min(times["flatten"]),
            "peak_mib": float("nan"),
            "shape": "",
            "threads": torch.get_num_threads(),
            "precision": precision,
        }
    elif variant.startswith("minibatch"):
        probe = load_probe_set(DATA, n=n, seed=0)

        def run():
            metric = MinibatchCKA()
            # float64 whatever --precision says: float32 is an option of the full estimator
            recorders = [FeatureRecorder(m, pool="flatten") for m in models]
            transforms = [transform_for(m) for m in loaded]
            with recorders[0], recorders[1], torch.inference_mode():
                for (images_a, _), (images_b, _) in zip(
                    batches(probe, transforms[0], batch_size), batches(probe, transforms[1], batch_size)
                ):
                    models[0](images_a)
                    models[1](images_b)
                    taken = [{k: Gram(v[0]) for k, v in r.take_grams().items()} for r in recorders]
                    metric.update(taken[0], taken[1])
            return metric.compute().values.shape
    elif variant == "pytorch-cka":
        import cka as pytorch_cka

        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x_a, torch.zeros(len(x_a))), batch_size=len(x_a)
        )

        def run():
            return pytorch_cka.compute_cka(
                models[0], models[1], loader, layers=layers[0], model2_layers=layers[1], device="cpu", progress=False
            )[0].shape
    elif variant == "torch-cka":
        from torch_cka import CKA as TorchCKA

        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(x_a, torch.zeros(len(x_a))), batch_size=len(x_a)
        )
        copies = [copy.deepcopy(m) for m in models]  # torch-cka never removes its hooks

        def run():
            peer = TorchCKA(copies[0], copies[1], model1_layers=layers[0], model2_layers=layers[1], device="cpu")
            peer.compare(loader)  # autograd on, every hooked output kept, as the package does it
            return tuple(peer.hsic_matrix.shape)
    else:
        raise SystemExit(f"unknown variant {variant!r}")
    seconds, mib, shape = measure_once(run)
    return {
        "variant": variant,
        "n": n,
        "seconds": seconds,
        "peak_mib": mib,
        "shape": str(shape),
        "threads": torch.get_num_threads(),
        "precision": precision,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=128)
    parser.add_argument("--batch-size", type=int, default=128, help="minibatch runs")
    parser.add_argument("--minibatch", default="256,512,1024", help="n of the minibatch runs ('' for none)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--precision", choices=PRECISIONS, default="float64", help="of cka-probe's Grams and CKA product"
    )
    parser.add_argument("--skip", default="", help="comma-separated variants to leave out (e.g. torch-cka)")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; best time and largest peak kept")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(_child(args.child, args.n, args.batch_size, args.threads, args.rounds, args.precision)))
        return

    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    plan = [(v, args.n) for v in BASE_VARIANTS if v not in skip]
    plan += [(f"minibatch (batches of {args.batch_size})", int(n)) for n in args.minibatch.split(",") if n.strip()]
    print(
        f"torch {torch.__version__}, {args.threads} threads, {' vs '.join(MODELS)}, flattened, cka-probe in "
        f"{args.precision}, one fresh process "
        f"per variant and round, {args.rounds} interleaved round(s): best time, largest peak",
        flush=True,
    )
    best: dict[tuple[str, int], dict] = {}
    for round_ in range(args.rounds):  # interleaved, so that a slow spell of the machine hits every variant
        for variant, n in plan:
            if variant == "in-process" and round_ > 0:  # it alternates its own rounds inside one process
                continue
            row = _run_child(variant, n, args)
            if row is None:
                continue
            print(
                f"  round {round_ + 1}: {variant}, n={n}: {row['seconds']:.2f} s, {row['peak_mib']:.0f} MiB", flush=True
            )
            kept = best.setdefault((variant, n), row)
            kept["seconds"] = min(kept["seconds"], row["seconds"])
            kept["peak_mib"] = max(kept["peak_mib"], row["peak_mib"])
    rows = list(best.values())
    print(f"{'variant':34} {'n':>5} {'wall s':>8} {'x bare':>7} {'peak MiB':>9} {'x bare':>7}")
    for row in rows:
        variant = row["variant"]
        base = best.get(("bare (one tensor)" if variant in ("pytorch-cka", "torch-cka") else "bare", args.n))
        row["time_ratio"] = row["seconds"] / base["seconds"] if base else float("nan")
        row["mem_ratio"] = row["peak_mib"] / max(base["peak_mib"], 1e-9) if base else float("nan")
        if variant.startswith("minibatch"):  # not one batch: compare the minibatch rows with each other
            row["time_ratio"] = row["mem_ratio"] = float("nan")
        if variant == "in-process":  # against the bare passes of the same process
            row["time_ratio"], row["mem_ratio"] = row["seconds"] / row["bare_seconds"], float("nan")
        print(
            f"{variant:34} {row['n']:>5} {row['seconds']:8.2f} {row['time_ratio']:7.2f} {row['peak_mib']:9.0f} "
            f"{row['mem_ratio']:7.2f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")


def _run_child(variant: str, n: int, args) -> dict | None:
    started = time.perf_counter()
    command = [
        "--child",
        variant,
        "--n",
        str(n),
        "--batch-size",
        str(args.batch_size),
        "--threads",
        str(args.threads),
        "--rounds",
        str(args.rounds),
        "--precision",
        args.precision,
    ]
    row, error = run_child(__file__, command, args.threads)
    if row is None:
        print(f"{variant} (n={n}) failed after {time.perf_counter() - started:.0f} s: {error}", flush=True)
    return row


if __name__ == "__main__":
    main()
