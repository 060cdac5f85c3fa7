"""A pool: every image a source offers, before sampling; and the draw of a probe set from it."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from PIL import Image
from torchvision.datasets.folder import default_loader

from .._files import sha256_file
from ..errors import NotEnoughImagesError, UnreadableImageError
from ._probe_set import ImageId, LazyImages, ProbeSet, balanced_order, image_content_sha256, pixels_sha256

__all__ = ["Pool", "draw", "path_loader"]

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


def _load_path(paths: Sequence[str], position: int) -> Image.Image:
    return default_loader(paths[position])


def path_loader(paths: Sequence[str]) -> Callable[[int], Image.Image]:
    """A picklable ``position -> PIL RGB image`` over image files, decoded with torchvision's ``default_loader``."""
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
                        f"cannot read image {where} ({problem}); remove or replace it, or pass skip_bad=True to skip it"
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
