"""A pool: every image a source offers, before sampling; and the draw of a probe set from it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .._files import sha256_file
from ..errors import NotEnoughImagesError, UnreadableImageError
from ._probe_set import ImageId, LazyImages, ProbeSet, balanced_order, image_content_sha256, pixels_sha256

__all__ = ["Pool", "draw", "path_loader", "read_rgb"]

#: What decoding an image file can raise: unreadable or truncated data, unknown format, oversized image.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)


@dataclass(frozen=True)
class Pool:
    """Every image of a source, unsampled.

    Attributes:
        kind: Source kind, hashed into the image-list hash.
        source: Description in words.
        image_ids: Id per image (relative path or index).
        labels: Class index per image, or ``None``.
        class_names: Name per class index, or ``None``.
        load: Position in the pool -> PIL RGB image (picklable).
        from_files: True when images are decoded from files that may be unreadable (checked when drawn).
        paths: File path per position when images are files (their bytes name their content), else ``None``
            (the decoded pixels do).
        shuffle: False keeps the pool's own order (synthetic images).
        synthetic: True for generated images.
    """

    kind: str
    source: str
    image_ids: Sequence[ImageId]
    labels: Sequence[int] | None
    class_names: tuple[str, ...] | None
    load: Callable[[int], Image.Image]
    from_files: bool = False
    shuffle: bool = True
    synthetic: bool = False
    paths: Sequence[str] | None = None


#: Pillow's modes of 16-bit greyscale pixels (PNG, TIFF, PGM). Older Pillow opens 16-bit PNGs as ``"I"``.
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


def read_rgb(path: str | Path) -> Image.Image:
    """An image file as an 8-bit RGB PIL image, at its real brightness.

    8-bit files are converted by Pillow (``Image.convert("RGB")``, as torchvision's loader does). 16-bit
    greyscale files are scaled to 8 bits, ``round(v / 257)`` (65535 -> 255), where Pillow's own conversion
    would clip every value above 255 to white. Images of 32-bit integer or float pixels have no defined
    brightness range and are refused.

    Raises:
        UnreadableImageError: a 32-bit integer or floating-point image (other than a 16-bit PNG).
        OSError, ValueError, SyntaxError, DecompressionBombError: the file does not decode.
    """
    with open(path, "rb") as handle:
        image = Image.open(handle)
        image.load()
    if image.mode in _SIXTEEN_BIT_MODES or (image.mode == "I" and image.format == "PNG"):
        levels = np.rint(np.asarray(image, dtype=np.float64) / 257.0).clip(0, 255).astype(np.uint8)
        return Image.fromarray(levels, mode="L").convert("RGB")
    if image.mode in ("I", "F"):
        kind = "32-bit integer" if image.mode == "I" else "floating-point"
        raise UnreadableImageError(
            f"{kind} pixels have no defined brightness range; save the image as 8- or 16-bit (PNG, JPEG, TIFF)"
        )
    return image.convert("RGB")


def _load_path(paths: Sequence[str], position: int) -> Image.Image:
    return read_rgb(paths[position])


def path_loader(paths: Sequence[str]) -> Callable[[int], Image.Image]:
    """A picklable ``position -> PIL RGB image`` over image files, decoded with :func:`read_rgb`."""
    return functools.partial(_load_path, tuple(paths))


def _content_sha256(pool: Pool, position: int) -> str:
    """SHA-256 of one image's content: its file's bytes, or its decoded pixels for images held in memory."""
    if pool.paths is not None:
        return sha256_file(pool.paths[position])
    return pixels_sha256(pool.load(position))


def _check_readable(pool: Pool, position: int) -> str | None:
    """``None`` if the image decodes, else why not."""
    try:
        pool.load(position)
    except _DECODE_ERRORS as exc:
        return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    return None


def draw(pool: Pool, n: int, seed: int, skip_bad: bool = False, root: Path | None = None) -> ProbeSet:
    """Draw ``n`` images from a pool in the seeded class-balanced order, checking that files decode.

    Args:
        pool: The source's images.
        n: How many to draw.
        seed: Sampling seed.
        skip_bad: Skip unreadable files (recorded in ``skipped``) and take the next image in the order instead
            of raising.
        root: Where relative image ids live, for error messages.

    Returns:
        The probe set.

    Raises:
        NotEnoughImagesError: The pool (less its unreadable files) holds fewer than ``n`` images.
        UnreadableImageError: An image does not decode and ``skip_bad`` is False.
    """
    available = len(pool.image_ids)
    if n > available:
        raise NotEnoughImagesError(
            f"{pool.source} holds {available} images and n={n} were asked; "
            f"ask for n <= {available} or use a larger source"
        )
    order = balanced_order(pool.image_ids, pool.labels, seed) if pool.shuffle else list(range(available))
    chosen: list[int] = []
    skipped: list[ImageId] = []
    for position in order:
        if len(chosen) == n:
            break
        if pool.from_files:
            problem = _check_readable(pool, position)
            if problem is not None:
                image_id = pool.image_ids[position]
                if not skip_bad:
                    where = root / str(image_id) if root is not None else image_id
                    raise UnreadableImageError(
                        f"cannot read image {where} ({problem}); remove or replace it, or skip it with --skip-bad (data.skip_bad: true in a config)"
                    )
                skipped.append(image_id)
                continue
        chosen.append(position)
    if len(chosen) < n:
        raise NotEnoughImagesError(
            f"{pool.source} holds {available} images of which {len(skipped)} are unreadable, and n={n} were asked; "
            f"ask for n <= {available - len(skipped)} or replace the unreadable files"
        )
    return ProbeSet(
        content_sha256=image_content_sha256(_content_sha256(pool, p) for p in chosen),
        images=LazyImages(pool.load, chosen),
        labels=None if pool.labels is None else tuple(int(pool.labels[p]) for p in chosen),
        class_names=pool.class_names,
        source=pool.source,
        kind=pool.kind,
        image_ids=tuple(pool.image_ids[p] for p in chosen),
        seed=seed,
        skipped=tuple(skipped),
        synthetic=pool.synthetic,
    )
