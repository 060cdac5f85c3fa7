"""Does spatial averaging cost CKA its ability to tell layers apart? A rerunnable study for docs/pooling.md.

Trains K small CNNs from different seeds on Fashion-MNIST (the IDX files of Debian's dataset-fashion-mnist,
read with cka_probe.data.read_fashion_mnist) for each training protocol, saves their checkpoints, then runs
Kornblith et al.'s layer-identification check (cka_probe.jobs.identify) with mean-pooled and flattened
features under several evaluation protocols. Everything runs on the CPU; with the defaults it takes a few
minutes on a 2-core machine (one thread: on a busy machine two threads train about ten times slower).

Training protocols (each trains K networks; 12,000 training images, 2 epochs, Adam):
  plain         8 conv layers, three or two per resolution (channels 8-8-8-16-16-16-32-32), stride 2 between
                resolutions, inputs normalised with the Fashion-MNIST mean and std
  pool          4 conv layers, one per resolution (channels 16-32-64-128), 2x2 max-pooling between them, normalised
  pool-whiten   as pool, and each input image standardised on its own (per-image whitening) inside the network
  pool-narrow   as pool-whiten, half the width (channels 8-16-32-64)

Evaluation protocols (on the trained networks; no retraining):
  probe images n = 32, 128 (the OFA-KD default), 512
  the global-average-pool output recorded as a layer too (its spatial mean duplicates the last ReLU's mean)

Usage:
  PYTHONPATH=. python scripts/pooling_study.py --out study [--k 4] [--threads 1]

Writes study/results.json, study/results.md (the tables of docs/pooling.md), study/identify_pool-whiten_n128.png and
the checkpoints under study/checkpoints/.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import timm.models
import torch
from torch import nn
from torch.nn import functional as F

from cka_probe.data import DEBIAN_FASHION_MNIST, read_fashion_mnist
from cka_probe.jobs.identify import identify, ordered_pairs

FMNIST_MEAN, FMNIST_STD = 0.2860, 0.3530  # of the Fashion-MNIST training images, pixels in [0, 1]


class PerImageStandardize(nn.Module):
    """Whiten each input image on its own: subtract its mean, divide by its standard deviation (over all its pixels).

    As TensorFlow's ``per_image_standardization`` of the CIFAR-10 pipelines behind Kornblith et al. (2019). Inside
    the network, so any probe transform feeds it the same way.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(1)
        std = flat.std(dim=1, keepdim=True).clamp_min(1.0 / flat.shape[1] ** 0.5)
        return ((flat - flat.mean(dim=1, keepdim=True)) / std).view_as(x)


class StudyCNN(nn.Module):
    """A plain CNN in the spirit of Kornblith et al.'s Plain-10: eight 3x3 conv-BN-ReLU layers, then GAP and a linear head.

    Widths ``w, w, w, 2w, 2w, 2w, 4w, 4w``; stride 2 at the 4th and 7th layer (28 -> 14 -> 7). With ``whiten``,
    each input image is standardised first (:class:`PerImageStandardize`).
    """

    def __init__(
        self, width: int = 16, num_classes: int = 10, in_chans: int = 3, whiten: bool = False, arch: str = "plain"
    ) -> None:
        super().__init__()
        if arch == "plain":
            widths = [width] * 3 + [2 * width] * 3 + [4 * width] * 2
            strides = [1, 1, 1, 2, 1, 1, 2, 1]
            pools = [False] * 8
        else:  # "pool": one conv per resolution, 2x2 max-pooling after each of the first three
            widths = [width, 2 * width, 4 * width, 8 * width]
            strides = [1, 1, 1, 1]
            pools = [True, True, True, False]
        layers, channels = [], in_chans
        for out, stride, pool in zip(widths, strides, pools):
            block = [nn.Conv2d(channels, out, 3, stride, 1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            layers.append(nn.Sequential(*block, *([nn.MaxPool2d(2)] if pool else [])))
            channels = out
        self.whiten = PerImageStandardize() if whiten else nn.Identity()
        self.features = nn.Sequential(*layers)
        self.global_pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.global_pool(self.features(self.whiten(x))).flatten(1))


def register(width: int, normalise: bool, whiten: bool = False, arch: str = "plain") -> str:
    """Register the CNN with timm (so cka-probe loads it by name), with its preprocessing as the data config."""
    name = f"pooling_study_{arch}_w{width}" + ("" if normalise else "_raw") + ("_whiten" if whiten else "")
    mean, std = ((FMNIST_MEAN,) * 3, (FMNIST_STD,) * 3) if normalise else ((0.0,) * 3, (1.0,) * 3)

    def build(pretrained: bool = False, **kwargs) -> StudyCNN:
        model = StudyCNN(width, num_classes=kwargs.get("num_classes", 10), whiten=whiten, arch=arch)
        model.pretrained_cfg = {
            "architecture": name,
            "input_size": (3, 28, 28),
            "interpolation": "bilinear",
            "mean": mean,
            "std": std,
            "crop_pct": 1.0,
            "crop_mode": "center",
            "num_classes": 10,
        }
        return model

    build.__name__ = name
    if not timm.models.is_model(name):
        timm.models.register_model(build)
    return name


def train(name: str, seed: int, images: torch.Tensor, labels: torch.Tensor, epochs: int, batch: int = 128) -> nn.Module:
    """Adam with a one-cycle schedule; the seed decides the initialisation and the data order."""
    torch.manual_seed(seed)
    model = timm.create_model(name, pretrained=False)
    cfg = model.pretrained_cfg
    inputs = ((images.float() / 255.0).unsqueeze(1).expand(-1, 3, -1, -1) - cfg["mean"][0]) / cfg["std"][0]
    steps = epochs * (len(images) // batch)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    generator = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in range(0, len(order) - batch + 1, batch):
            index = order[start : start + batch]
            loss = F.cross_entropy(model(inputs[index]), labels[index])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
    return model.eval()


def margins(matrices: dict[tuple[int, int], np.ndarray], num_networks: int) -> dict[str, list[float]]:
    """How far each layer's corresponding layer stands out, against how much it varies between network pairs.

    ``margin``: per layer, its CKA with the corresponding layer minus its highest CKA with any other layer, both
    averaged over the ordered network pairs (:func:`~cka_probe.jobs.identify.ordered_pairs`, as
    :func:`~cka_probe.jobs.identify.identification_scores` reads them). ``spread``: the standard deviation of the
    corresponding-layer CKA over the network pairs. A margin small against the spread makes identification a
    coin toss between neighbouring layers, whatever the similarity index.
    """
    average = np.mean([matrix for _, _, matrix in ordered_pairs(matrices, num_networks)], axis=0)
    others = np.where(np.eye(len(average), dtype=bool), -np.inf, average).max(axis=1)
    diagonals = np.array([np.diag(matrices[pair]) for pair in matrices])
    return {
        "margin": np.round(np.diag(average) - others, 3).tolist(),
        "spread": np.round(diagonals.std(axis=0), 3).tolist(),
    }


@torch.no_grad()
def accuracy(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> float:
    cfg = model.pretrained_cfg
    inputs = ((images.float() / 255.0).unsqueeze(1).expand(-1, 3, -1, -1) - cfg["mean"][0]) / cfg["std"][0]
    predictions = torch.cat([model(part).argmax(1) for part in inputs.split(1000)])
    return float((predictions == labels).float().mean())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="pooling_study", help="output folder")
    parser.add_argument("--k", type=int, default=4, help="networks per training protocol (seeds 0..K-1)")
    parser.add_argument("--train-images", type=int, default=12000, help="training images (a seeded subset)")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--fashion-mnist", default=str(DEBIAN_FASHION_MNIST), help="folder of the IDX files")
    parser.add_argument("--protocols", default="plain,pool,pool-whiten,pool-narrow")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    out = Path(args.out)
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    train_images, train_labels = read_fashion_mnist(args.fashion_mnist, "train")
    subset = np.random.default_rng(0).permutation(len(train_images))[: args.train_images]
    images, labels = torch.from_numpy(train_images[subset]), torch.from_numpy(train_labels[subset])
    test_images, test_labels = read_fashion_mnist(args.fashion_mnist, "test")
    test_images, test_labels = torch.from_numpy(test_images), torch.from_numpy(test_labels)

    protocols = {  # name -> register(width, normalise, whiten, arch)
        "plain": (8, True, False, "plain"),
        "pool": (16, True, False, "pool"),
        "pool-whiten": (16, True, True, "pool"),
        "pool-narrow": (8, True, True, "pool"),
    }
    chosen = [p for p in args.protocols.split(",") if p]
    checkpoints: dict[str, list[str]] = {}
    results: dict = {"settings": vars(args), "training": {}, "identify": []}
    for protocol in chosen:
        name = register(*protocols[protocol])
        checkpoints[protocol] = []
        for seed in range(args.k):
            tic = time.perf_counter()
            model = train(name, seed, images, labels, args.epochs)
            path = out / "checkpoints" / protocol / f"seed{seed}.pth"
            path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(model.state_dict(), path)
            checkpoints[protocol].append(str(path))
            acc = accuracy(model, test_images, test_labels)
            results["training"].setdefault(protocol, []).append(
                {"seed": seed, "test_accuracy": acc, "seconds": round(time.perf_counter() - tic, 1)}
            )
            print(
                f"[{time.perf_counter() - started:6.0f} s] trained {protocol} seed {seed}: test accuracy {acc:.3f}",
                flush=True,
            )

    data = f"fashion-mnist:{args.fashion_mnist}"
    runs = [(p, 128, "activations", f"{p}, n=128") for p in chosen]
    if "pool-whiten" in chosen:
        runs += [
            ("pool-whiten", 32, "activations", "pool-whiten, n=32"),
            ("pool-whiten", 512, "activations", "pool-whiten, n=512"),
            ("pool-whiten", 128, ["features.*.2", "global_pool"], "pool-whiten, n=128, GAP output as a layer"),
        ]
    for protocol, n, layers, title in runs:
        tic = time.perf_counter()
        result = identify(
            register(*protocols[protocol]),
            checkpoints[protocol],
            data,
            n=n,
            seed=0,
            layers=layers,
            pools=("mean", "flatten"),
            device="cpu",
            progress=False,
        )
        per_layer = {
            pool: result.table[result.table.pooling == pool]["share"].round(3).tolist() for pool in ("mean", "flatten")
        }
        results["identify"].append(
            {
                "run": title,
                "protocol": protocol,
                "n": n,
                "layers": result.table.layer.unique().tolist(),
                "overall": result.overall,
                "per_layer": per_layer,
                "margins": {pool: margins(result.matrices[pool], args.k) for pool in ("mean", "flatten")},
                "seconds": round(time.perf_counter() - tic, 1),
            }
        )
        print(f"[{time.perf_counter() - started:6.0f} s] {title}: {result.summary_line()}", flush=True)
        if title == "pool-whiten, n=128":
            result.save(out, formats=("png",), stem="identify_pool-whiten_n128", overwrite=True)
    results["seconds"] = round(time.perf_counter() - started, 1)
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(_markdown(results))
    print(f"done in {results['seconds']} s; wrote {out / 'results.json'} and {out / 'results.md'}")
    return 0


def _markdown(results: dict) -> str:
    lines = ["| run | flattened | mean | layer matches |", "|---|---:|---:|---:|"]
    for run in results["identify"]:
        flat, mean = run["overall"]["flatten"], run["overall"]["mean"]
        lines.append(
            f"| {run['run']} | {100 * flat['share']:.1f} % | {100 * mean['share']:.1f} % | {flat['comparisons']} |"
        )
    lines += [
        "",
        "Per layer, flattened: corresponding-layer CKA minus the best other layer's (both averaged over network "
        "pairs), and the corresponding-layer CKA's standard deviation over the pairs:",
        "",
        "| run | margin | spread |",
        "|---|---|---|",
    ]
    for run in results["identify"]:
        flat = run["margins"]["flatten"]
        lines.append(f"| {run['run']} | {_listed(flat['margin'])} | {_listed(flat['spread'])} |")
    lines += ["", "| protocol | test accuracy (mean over seeds) | seconds per network |", "|---|---:|---:|"]
    for protocol, nets in results["training"].items():
        lines.append(
            f"| {protocol} | {np.mean([n['test_accuracy'] for n in nets]):.3f} | "
            f"{np.mean([n['seconds'] for n in nets]):.0f} |"
        )
    return "\n".join(lines) + "\n"


def _listed(values: list[float]) -> str:
    return " ".join(f"{v:+.3f}" if v < 0 else f"{v:.3f}" for v in values)


if __name__ == "__main__":
    sys.exit(main())
