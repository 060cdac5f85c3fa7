"""Benchmark: the small Gram kernels whose speed the math and capture code rely on, one thread each.

Each row is what a docstring of ``cka_probe.math`` or ``cka_probe.capture.pooling`` says a choice buys; the
numbers live in ``benchmarks/README.md`` (re-measured by running this), not in the docstrings.

* ``numpy_gram_`` (SciPy's ``?syrk`` through ctypes, upper triangle only) against NumPy's ``x @ x.T``, per call;
* ``upper_gram_`` on one torch thread (the NumPy path) against ``torch.mm(x, x.T)``, as a rate;
* the CPU Gram stage of ``centered_grams``, per layer, at small widths (its fixed cost per layer bounds how many
  Python threads share the layers);
* ``np.take(..., mode="clip")`` against ``mode="raise"`` packing a Gram's upper triangle;
* ``flattened_gram`` in float32 against float64 on one ``(128, 32, 112, 112)`` activation;
* the first ``import scipy.linalg`` of a process that has torch loaded.

Run:  python benchmarks/bench_gram_kernels.py [--repeats 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from cka_probe.capture.pooling import flattened_gram  # noqa: E402
from cka_probe.math import centered_grams  # noqa: E402
from cka_probe.math.kernels import numpy_gram_, one_blas_thread, upper_gram_  # noqa: E402

N = 128


def best(repeats: int, fn, *args, **kwargs) -> float:
    """Best wall time of ``repeats`` calls ``fn(*args, **kwargs)``, in seconds (one warm-up call first)."""
    fn(*args, **kwargs)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn(*args, **kwargs)
        times.append(time.perf_counter() - start)
    return min(times)


def syrk_against_numpy(repeats: int) -> list[dict]:
    rows = []
    rng = np.random.default_rng(0)
    with one_blas_thread():
        for width in (1, 64, 256, 1024):
            x = rng.standard_normal((N, width), dtype=np.float32)
            out = np.zeros((N, N), np.float32)
            rows.append(
                {
                    "width": width,
                    "numpy_gram_ us": round(1e6 * best(repeats * 10, numpy_gram_, x, out), 1),
                    "x @ x.T us": round(1e6 * best(repeats * 10, np.matmul, x, x.T), 1),
                }
            )
    return rows


def upper_gram_against_mm(repeats: int) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        for width in (64, 1024, 16384):
            x = torch.randn(N, width, generator=generator).to(dtype)
            out = torch.empty(N, N, dtype=dtype)
            ours = best(repeats, upper_gram_, x, out)
            mm = best(repeats, torch.mm, x, x.T)
            rows.append({"dtype": str(dtype).split(".")[-1], "width": width, "rate vs torch.mm": round(mm / ours, 2)})
    return rows


def gram_stage_per_layer(repeats: int) -> list[dict]:
    rows = []
    generator = torch.Generator().manual_seed(0)
    layers = 50
    for width in (1, 64, 448):
        feats = [torch.randn(N, width, generator=generator) for _ in range(layers)]
        seconds = best(repeats, centered_grams, feats, dtype=torch.float32)
        rows.append({"width": width, "us per layer": round(1e6 * seconds / layers, 1)})
    return rows


def take_modes(repeats: int) -> dict:
    gram = np.random.default_rng(0).standard_normal((N, N))
    upper = np.flatnonzero(np.triu(np.ones((N, N), bool)))
    packed = np.empty(upper.size)
    clip = best(repeats * 10, np.take, gram, upper, out=packed, mode="clip")
    raise_ = best(repeats * 10, np.take, gram, upper, out=packed, mode="raise")
    return {
        "clip us": round(1e6 * clip, 1),
        "raise us": round(1e6 * raise_, 1),
        "raise / clip": round(raise_ / clip, 1),
    }


def flattened_precisions(repeats: int) -> dict:
    x = torch.randn(N, 32, 112, 112, generator=torch.Generator().manual_seed(0))
    reps = max(1, repeats // 5)
    f32 = best(reps, flattened_gram, x, "NCHW", precision="float32")
    f64 = best(reps, flattened_gram, x, "NCHW", precision="float64")
    return {"float32 s": round(f32, 3), "float64 s": round(f64, 3), "float64 / float32": round(f64 / f32, 2)}


def scipy_first_import() -> float:
    code = "import time, torch, numpy; t = time.perf_counter(); import scipy.linalg; print(time.perf_counter() - t)"
    runs = [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)]
    runs += [float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)]
    return round(min(runs), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    report = {
        "torch": torch.__version__,
        "numpy": np.__version__,
        "numpy_gram_ vs x @ x.T (n = 128, float32)": syrk_against_numpy(args.repeats),
        "upper_gram_ vs torch.mm (n = 128)": upper_gram_against_mm(args.repeats),
        "centered_grams CPU stage (n = 128, float32, 50 layers)": gram_stage_per_layer(args.repeats),
        "np.take of the upper triangle (n = 128)": take_modes(args.repeats),
        "flattened_gram (128, 32, 112, 112)": flattened_precisions(args.repeats),
        "first import scipy.linalg s": scipy_first_import(),
    }
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
