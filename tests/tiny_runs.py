"""Real tiny ``cka-probe train`` runs for the tests of every reader of a run: a ViT student built with
``student_kwargs`` (img_size 32, patch 4, depth 2, embed_dim 32), trained one epoch at 32 px on
Fashion-MNIST-shaped IDX files, one run per seed."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

STUDENT = "vit_tiny_patch16_224"
STUDENT_KWARGS = {"img_size": 32, "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2}
IMG_SIZE = 32
FASHION_MNIST_MEAN, FASHION_MNIST_STD = (0.2860,) * 3, (0.3530,) * 3  # the statistics of Fashion-MNIST


def _write_idx(path: Path, array: np.ndarray) -> None:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


def write_fashion_mnist(folder: Path, n_train: int = 16, n_test: int = 8) -> Path:
    """Random 28 x 28 grey images in Fashion-MNIST's four IDX files."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


def train_tiny_run(root: Path, seed: int, data_dir: Path, epochs: int = 1, **changes) -> Path:
    """Train one tiny run under ``root/seed{seed}`` and return its folder (``last.pth``, ``best.pth``)."""
    from cka_probe.ofa import TrainConfig, train

    config = TrainConfig.from_dict(
        {
            "method": "scratch",
            "student": STUDENT,
            "student_kwargs": dict(STUDENT_KWARGS),
            "dataset": "fashion_mnist",
            "data_dir": str(data_dir),
            "img_size": IMG_SIZE,
            "epochs": epochs,
            "batch_size": 8,
            "workers": 0,
            "device": "cpu",
            "warmup_epochs": 0,
            "seed": seed,
            "output_dir": str(root / f"seed{seed}"),
            **changes,
        }
    )
    return train(config).output_dir
