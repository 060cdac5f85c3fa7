"""Fashion-MNIST (Zalando Research, MIT licence): the IDX files, and the subset embedded in the package.

The IDX files are read with torchvision's ``read_image_file`` / ``read_label_file``; gzipped files (as
Debian's ``dataset-fashion-mnist`` installs them under ``/usr/share/datasets/fashion-mnist``) are
decompressed into a temporary folder first. Each 28x28 grey image becomes an RGB image of three equal
channels; each model's own transform then resizes it.

The embedded probe set, ``fashion_mnist_probe.npz`` next to this module, holds the first 50 images of each
class of the test split (500 images) with their labels and test-split indices; it was made by
:mod:`cka_probe.data.build_embedded`, and ``fashion_mnist_probe.LICENSE.txt`` beside it carries the
dataset's attribution and licence.
"""

from __future__ import annotations

import functools
import gzip
import os
import shutil
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image
from torchvision.datasets import FashionMNIST
from torchvision.datasets.mnist import read_image_file, read_label_file

from ..errors import ArgumentError, DataNotFoundError
from ._pool import Pool

__all__ = [
    "CLASS_NAMES",
    "DEBIAN_FASHION_MNIST",
    "EMBEDDED_FILE",
    "embedded_pool",
    "fashion_mnist_pool",
    "read_fashion_mnist",
]

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES: tuple[str, ...] = tuple(FashionMNIST.classes)
EMBEDDED_FILE = "fashion_mnist_probe.npz"

_PREFIX = {"test": "t10k", "train": "train"}
_READ_ERRORS = (OSError, EOFError, ValueError, TypeError, KeyError, RuntimeError)


def _plain_file(directory: Path, name: str, scratch: Path) -> Path:
    """``directory/name``, or ``directory/name.gz`` decompressed into ``scratch``."""
    plain, packed = directory / name, directory / f"{name}.gz"
    if plain.is_file():
        return plain
    if packed.is_file():
        with gzip.open(packed, "rb") as source, open(scratch / name, "wb") as target:
            shutil.copyfileobj(source, target)
        return scratch / name
    raise DataNotFoundError(
        f"Fashion-MNIST file {name}[.gz] is not in {directory}; install Debian's dataset-fashion-mnist "
        "or pass fashion-mnist:DIR with the IDX files"
    )


def read_fashion_mnist(
    directory: str | os.PathLike = DEBIAN_FASHION_MNIST, split: str = "test"
) -> tuple[np.ndarray, np.ndarray]:
    """Read one Fashion-MNIST split from its IDX files (plain or gzipped).

    Args:
        directory: Folder holding ``t10k-images-idx3-ubyte[.gz]`` etc.
        split: ``"test"`` (10,000 images) or ``"train"`` (60,000).

    Returns:
        ``images`` as uint8 ``(N, 28, 28)`` and ``labels`` as int64 ``(N,)``.

    Raises:
        DataNotFoundError: Files missing or unreadable, or image and label counts that differ.
    """
    if split not in _PREFIX:
        raise ArgumentError(f"unknown Fashion-MNIST split {split!r}; use 'test' or 'train'")
    directory = Path(directory).expanduser()
    prefix = _PREFIX[split]
    with tempfile.TemporaryDirectory(prefix="cka-probe-fmnist-") as scratch:
        image_file = _plain_file(directory, f"{prefix}-images-idx3-ubyte", Path(scratch))
        label_file = _plain_file(directory, f"{prefix}-labels-idx1-ubyte", Path(scratch))
        try:
            images = read_image_file(str(image_file)).numpy()
            labels = read_label_file(str(label_file)).numpy()
        except _READ_ERRORS as exc:
            detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataNotFoundError(
                f"cannot read the Fashion-MNIST {split} files in {directory} ({detail}); reinstall or re-download them"
            ) from exc
    if len(images) != len(labels):
        raise DataNotFoundError(
            f"Fashion-MNIST {split} files in {directory} hold {len(images)} images but {len(labels)} labels; "
            "reinstall or re-download them"
        )
    return images, labels


def _gray_image(images: np.ndarray, position: int) -> Image.Image:
    return Image.fromarray(np.ascontiguousarray(images[position])).convert("RGB")


def fashion_mnist_pool(directory: str | os.PathLike = DEBIAN_FASHION_MNIST) -> Pool:
    """The Fashion-MNIST test split (10,000 images, 10 classes); ids are test-split indices."""
    images, labels = read_fashion_mnist(directory, "test")
    return Pool(
        kind="fashion-mnist-test",
        source=f"Fashion-MNIST test split ({Path(directory).expanduser().resolve()})",
        image_ids=list(range(len(images))),
        labels=labels.tolist(),
        class_names=CLASS_NAMES,
        load=functools.partial(_gray_image, images),
    )


def embedded_pool() -> Pool:
    """The Fashion-MNIST test subset shipped in the package; ids are the images' test-split indices."""
    with resources.as_file(resources.files(__package__) / EMBEDDED_FILE) as path:
        if not path.is_file():
            raise DataNotFoundError(
                f"the embedded probe set {path} is missing from the installation; reinstall cka-probe "
                "or rebuild it with python -m cka_probe.data.build_embedded"
            )
        with np.load(path, allow_pickle=False) as archive:
            images, labels, indices = archive["images"], archive["labels"], archive["indices"]
    return Pool(
        kind="fashion-mnist-test",
        source=f"embedded Fashion-MNIST test subset ({len(images)} images, Zalando Research, MIT licence)",
        image_ids=indices.tolist(),
        labels=labels.tolist(),
        class_names=CLASS_NAMES,
        load=functools.partial(_gray_image, images),
    )
