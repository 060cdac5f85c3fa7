"""Image folders built in tmp_path with PIL, and an independent reader of the Debian Fashion-MNIST files."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")

#: One colour per class, so a test can tell from the pixels which class folder an image came from.
CLASS_COLOURS = {"cat": (250, 10, 10), "dog": (10, 250, 10), "fox": (10, 10, 250)}

needs_fashion_mnist = pytest.mark.skipif(
    not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file(),
    reason="Debian's dataset-fashion-mnist is not installed (apt-get install dataset-fashion-mnist)",
)


def write_image(path: Path, colour: tuple[int, int, int], size: int = 8) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (size, size), colour).save(path)
    return path


def make_class_folders(root: Path, per_class: int) -> Path:
    for name, colour in CLASS_COLOURS.items():
        for i in range(per_class):
            write_image(root / name / f"{name}_{i}.png", colour)
    return root


def make_flat_folder(root: Path, count: int) -> Path:
    for i in range(count):
        write_image(root / f"img_{i:02d}.png", (i * 20, 0, 0))
    return root


def fashion_mnist_test_split() -> tuple[np.ndarray, np.ndarray]:
    """The test split parsed straight from the IDX byte layout (16- and 8-byte headers), without torchvision."""
    image_bytes = gzip.decompress((FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").read_bytes())
    label_bytes = gzip.decompress((FASHION_MNIST_DIR / "t10k-labels-idx1-ubyte.gz").read_bytes())
    images = np.frombuffer(image_bytes[16:], np.uint8)
    labels = np.frombuffer(label_bytes[8:], np.uint8)
    return images.reshape(-1, 28, 28), labels
