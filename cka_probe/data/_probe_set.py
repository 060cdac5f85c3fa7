"""The probe set: the ordered images both models see, and the deterministic, class-balanced way they are drawn.

Sampling (:func:`balanced_order`): the images of each class are put in a seeded order, by the SHA-256 of
``"{seed}:{image id}"``, and the classes are then taken round-robin (first image of every class in label
order, then the second, ...; a class that runs out drops out). The first ``n`` images of that order form
the probe set. The order depends only on the seed and the image ids, not on library versions or on the
order files are listed in, and a smaller ``n`` gives a prefix of a larger one.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Hashable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

from PIL import Image

from ..errors import ArgumentError

__all__ = ["LazyImages", "ProbeSet", "balanced_order", "image_content_sha256", "image_list_sha256", "pixels_sha256"]

ImageId = str | int


class LazyImages(Sequence[Image.Image]):
    """A read-only sequence of PIL images decoded on access by ``load(key)``.

    Args:
        load: Turns a key into a PIL RGB image (a module-level function or a ``functools.partial`` of one,
            so the sequence can go to DataLoader worker processes).
        keys: One key per image, in order.
    """

    def __init__(self, load: Callable[[Any], Image.Image], keys: Sequence[Any]) -> None:
        self._load = load
        self._keys = tuple(keys)

    def __len__(self) -> int:
        return len(self._keys)

    @overload
    def __getitem__(self, index: int) -> Image.Image: ...

    @overload
    def __getitem__(self, index: slice) -> LazyImages: ...

    def __getitem__(self, index):
        if isinstance(index, slice):
            return LazyImages(self._load, self._keys[index])
        return self._load(self._keys[index])

    def __repr__(self) -> str:
        return f"LazyImages({len(self)} images)"


def image_list_sha256(kind: str, image_ids: Sequence[ImageId]) -> str:
    """SHA-256 naming an ordered list of images: the source kind, then the ids, one per line.

    The kind (e.g. ``"folder"``, ``"fashion-mnist-test"``) rather than a path is hashed, so the same
    relative files under another mount point hash the same. The hash names the list, not the pixels
    (:func:`image_content_sha256` names those).

    Example:
        >>> image_list_sha256("folder", ["a.png", "b.png"]) == image_list_sha256("folder", ["b.png", "a.png"])
        False
    """
    digest = hashlib.sha256(f"cka-probe image list v1\n{kind}".encode())
    for image_id in image_ids:
        digest.update(b"\n" + str(image_id).encode())
    return digest.hexdigest()


def pixels_sha256(image: Image.Image) -> str:
    """SHA-256 of a decoded image: its mode, size and pixel bytes."""
    digest = hashlib.sha256(f"{image.mode} {image.size[0]}x{image.size[1]}\n".encode())
    digest.update(image.tobytes())
    return digest.hexdigest()


def image_content_sha256(image_digests: Iterable[str]) -> str:
    """SHA-256 naming the content of an ordered list of images, from one SHA-256 per image.

    Each image's digest is that of its file's bytes (image files) or of its decoded pixels
    (:func:`pixels_sha256`, for images held in memory), so an edited file gives another hash.
    """
    digest = hashlib.sha256(b"cka-probe image content v1")
    for image_digest in image_digests:
        digest.update(b"\n" + image_digest.encode())
    return digest.hexdigest()


def _shuffle_key(seed: int, image_id: ImageId) -> bytes:
    return hashlib.sha256(f"{seed}:{image_id}".encode()).digest()


def balanced_order(image_ids: Sequence[ImageId], labels: Sequence[Hashable] | None, seed: int) -> list[int]:
    """Positions of all images in the seeded, class-balanced round-robin order described in the module docstring.

    Args:
        image_ids: One id per image (unique).
        labels: One label per image, or ``None`` (one class: a plain seeded shuffle).
        seed: The shuffle seed.

    Returns:
        Every position ``0..len(image_ids)-1`` once.

    Example:
        >>> order = balanced_order(["a", "b", "c", "d"], [0, 0, 1, 1], seed=0)
        >>> sorted(order), [[0, 0, 1, 1][i] for i in order]
        ([0, 1, 2, 3], [0, 1, 0, 1])
    """
    groups: dict[Hashable, list[int]] = {}
    for position in range(len(image_ids)):
        groups.setdefault(0 if labels is None else labels[position], []).append(position)
    queues = [sorted(members, key=lambda p: _shuffle_key(seed, image_ids[p])) for _, members in sorted(groups.items())]
    order: list[int] = []
    for rank in range(max((len(q) for q in queues), default=0)):
        order.extend(queue[rank] for queue in queues if rank < len(queue))
    return order


@dataclass(frozen=True)
class ProbeSet:
    """The images a CKA analysis feeds to both models, in one fixed order, with where they came from.

    Attributes:
        images: PIL RGB images, decoded on access.
        labels: Class index per image, or ``None`` when the source has no classes.
        class_names: Name per class index, or ``None``.
        source: What the images are, in words (dataset, split, location).
        kind: The source kind hashed into :attr:`image_list_sha256` (e.g. ``"folder"``, ``"fashion-mnist-test"``).
        image_ids: Per image, its path relative to the source root, or its index in the source.
        seed: The sampling seed.
        skipped: Ids of unreadable images that were skipped (``skip_bad=True``).
        synthetic: True for generated images (smoke tests only, never results).
        image_list_sha256: SHA-256 of the kind and the ordered ids (computed, see :func:`image_list_sha256`).
        content_sha256: SHA-256 of the images' content in order (see :func:`image_content_sha256`): the
            bytes of each image file, or the decoded pixels of images held in memory (computed from
            ``images`` when not given).
    """

    images: Sequence[Image.Image] = field(compare=False, repr=False)
    labels: tuple[int, ...] | None
    class_names: tuple[str, ...] | None
    source: str
    kind: str
    image_ids: tuple[ImageId, ...]
    seed: int
    skipped: tuple[ImageId, ...] = ()
    synthetic: bool = False
    content_sha256: str | None = None
    image_list_sha256: str = field(init=False)

    def __post_init__(self) -> None:
        n = len(self.image_ids)
        if len(self.images) != n or (self.labels is not None and len(self.labels) != n):
            raise ArgumentError(
                f"probe set parts differ in length: {len(self.images)} images, {len(self.image_ids)} ids, "
                f"{'no' if self.labels is None else len(self.labels)} labels; build it with load_probe_set"
            )
        object.__setattr__(self, "image_list_sha256", image_list_sha256(self.kind, self.image_ids))
        if self.content_sha256 is None:
            object.__setattr__(self, "content_sha256", image_content_sha256(pixels_sha256(im) for im in self.images))

    @property
    def n(self) -> int:
        """Number of images."""
        return len(self.image_ids)

    def class_counts(self) -> dict[str, int] | None:
        """Images per class (by name when known, else by index), or ``None`` without labels."""
        if self.labels is None:
            return None
        counts: dict[str, int] = {}
        for label in self.labels:
            key = self.class_names[label] if self.class_names else str(label)
            counts[key] = counts.get(key, 0) + 1
        return counts

    def provenance(self) -> dict[str, Any]:
        """A JSON-ready record of the probe set: source, kind, n, seed, list and content hashes, skipped files,
        class counts."""
        return {
            "source": self.source,
            "kind": self.kind,
            "n": self.n,
            "seed": self.seed,
            "image_list_sha256": self.image_list_sha256,
            "content_sha256": self.content_sha256,
            "synthetic": self.synthetic,
            "skipped": list(self.skipped),
            "class_counts": self.class_counts(),
        }
