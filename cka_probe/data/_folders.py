"""Image files on disk: a directory (class folders or flat), and Imagenette downloaded into a cache.

A directory whose top level holds images (torchvision's ``IMG_EXTENSIONS``) is a flat, unlabelled set;
one whose images sit in sub-folders is read as torchvision's ``ImageFolder`` layout (one folder per class,
as ImageNet's validation set is usually arranged). A directory with both is refused as ambiguous.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

from torchvision.datasets import ImageFolder, Imagenette
from torchvision.datasets.folder import IMG_EXTENSIONS, has_file_allowed_extension

from .._choices import IMAGENETTE_SIZES
from ..errors import DataNotFoundError
from ._pool import Pool, path_loader

__all__ = ["IMAGENETTE_SIZES", "folder_pool", "imagenette_pool"]

_FALLBACK = (
    "use the embedded probe set (--data embedded; data.source: embedded in a config) or another folder of images"
)


def folder_pool(root: str | os.PathLike) -> Pool:
    """Every image in a directory: a flat folder (no labels) or class folders (``ImageFolder`` labels).

    Args:
        root: The directory.

    Returns:
        The pool; ids are paths relative to ``root`` (POSIX separators).

    Raises:
        DataNotFoundError: The directory is missing, not a directory, holds no images, or mixes top-level
            images with class folders.
    """
    root = Path(root).expanduser().resolve()
    if not root.exists():
        raise DataNotFoundError(f"probe image directory {root} does not exist; pass an existing folder or {_FALLBACK}")
    if not root.is_dir():
        raise DataNotFoundError(f"probe image source {root} is a file, not a directory; pass its folder or {_FALLBACK}")
    with os.scandir(root) as scan:
        entries = sorted(scan, key=lambda entry: entry.name)
    flat = [e.name for e in entries if e.is_file() and has_file_allowed_extension(e.name, IMG_EXTENSIONS)]
    samples: list[tuple[str, int]] = []
    classes: list[str] = []
    if any(e.is_dir() for e in entries):
        folder = ImageFolder(str(root), allow_empty=True)
        samples, classes = folder.samples, folder.classes
    if flat and samples:
        raise DataNotFoundError(
            f"probe image directory {root} holds images both at its top level and in sub-folders; "
            "keep one layout (class folders, or a flat folder)"
        )
    if flat:
        return Pool(
            kind="folder",
            source=f"image folder {root} (flat, {len(flat)} images)",
            image_ids=flat,
            labels=None,
            class_names=None,
            load=path_loader([str(root / name) for name in flat]),
            from_files=True,
            paths=[str(root / name) for name in flat],
        )
    if not samples:
        raise DataNotFoundError(
            f"probe image directory {root} holds no images ({' '.join(IMG_EXTENSIONS)}), neither at its top level "
            f"nor in class folders; {_FALLBACK}"
        )
    return _labelled_files_pool(
        "folder",
        f"image folder {root} ({len(classes)} class folders, {len(samples)} images)",
        root,
        samples,
        tuple(classes),
    )


def _labelled_files_pool(kind: str, source: str, root: Path, samples, class_names: tuple[str, ...]) -> Pool:
    """A pool of image files given as ``(path, class index)`` pairs; ids are the paths relative to ``root``."""
    return Pool(
        kind=kind,
        source=source,
        image_ids=[Path(path).relative_to(root).as_posix() for path, _ in samples],
        labels=[label for _, label in samples],
        class_names=class_names,
        load=path_loader([path for path, _ in samples]),
        from_files=True,
        paths=[path for path, _ in samples],
    )


def imagenette_pool(root: str | os.PathLike, size: str = "320px") -> Pool:
    """Imagenette's validation split (10 ImageNet classes), downloaded by torchvision into ``root`` if not there.

    Args:
        root: Download and extraction folder (the archive unpacks to ``root/imagenette2[-SIZE]/val``).
        size: ``"full"``, ``"320px"`` or ``"160px"`` (shorter side of the stored images).

    Returns:
        The pool; ids are paths relative to ``root``, class names the first English name of each class.

    Raises:
        DataNotFoundError: Imagenette is not in ``root`` and cannot be downloaded (no network, bad archive),
            or ``size`` is unknown.
    """
    if size not in IMAGENETTE_SIZES:
        choices = " or ".join(f"imagenette:{choice}" for choice in IMAGENETTE_SIZES)
        raise DataNotFoundError(f"unknown Imagenette size {size!r}; use {choices}")
    root = Path(root).expanduser().resolve()
    try:
        dataset = Imagenette(str(root), split="val", size=size, download=True)
    except (OSError, RuntimeError, tarfile.TarError) as exc:  # URLError is an OSError; bad checksum a RuntimeError
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DataNotFoundError(
            f"Imagenette ({size}) is not in {root} and could not be downloaded ({detail}); "
            f"connect to the internet once, put the extracted archive there (set CKA_PROBE_CACHE to use another "
            f"cache folder; in Python, root=), or {_FALLBACK}"
        ) from exc
    samples = dataset._samples  # (path, class index) pairs; torchvision keeps no public list of them
    if not samples:
        raise DataNotFoundError(
            f"Imagenette ({size}) in {root} holds no validation images; delete that folder to download it again"
        )
    return _labelled_files_pool(
        "imagenette",
        f"Imagenette {size} validation split ({root})",
        root,
        samples,
        tuple(names[0] for names in dataset.classes),
    )
