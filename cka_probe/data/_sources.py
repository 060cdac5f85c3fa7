"""Probe-set sources by name, and :func:`load_probe_set`."""

from __future__ import annotations

import os
from pathlib import Path

from .._choices import PROBE_SOURCES
from .._files import cache_root
from ..errors import ArgumentError, DataNotFoundError
from ._fashion_mnist import DEBIAN_FASHION_MNIST, embedded_pool, fashion_mnist_pool
from ._folders import folder_pool, imagenette_pool
from ._pool import Pool, draw
from ._probe_set import ProbeSet
from ._synthetic import synthetic_pool

__all__ = ["SOURCES", "default_cache_dir", "load_probe_set"]

SOURCES = PROBE_SOURCES
"""Named sources (:data:`cka_probe._choices.PROBE_SOURCES`); anything else is taken as a directory."""


def default_cache_dir() -> Path:
    """Where downloaded data sets go: the ``datasets`` folder of :func:`cka_probe._files.cache_root`.

    That is ``$CKA_PROBE_CACHE/datasets`` if ``CKA_PROBE_CACHE`` is set, else ``$XDG_CACHE_HOME/cka-probe/datasets``,
    else ``~/.cache/cka-probe/datasets``; feature files go to the ``features`` folder beside it, never here.
    """
    return cache_root() / "datasets"


def _pool(source: str, n: int, seed: int, root: str | os.PathLike | None) -> tuple[Pool, Path | None]:
    """The pool a source names, and the folder its image ids are relative to (``None`` for in-memory images)."""
    name, _, argument = source.partition(":")
    if source == "embedded":
        return embedded_pool(), None
    if source == "synthetic":
        return synthetic_pool(n, seed), None
    if name == "fashion-mnist":
        return fashion_mnist_pool(argument or DEBIAN_FASHION_MNIST), None
    if name == "imagenette":
        folder = Path(root) if root is not None else default_cache_dir() / "imagenette"
        return imagenette_pool(folder, argument or "320px"), folder.expanduser().resolve()
    path = Path(source).expanduser()
    if not path.exists() and not any(sep in source for sep in ("/", os.sep)):
        raise DataNotFoundError(
            f"probe source {source!r} is neither a named source ({', '.join(SOURCES)}) nor an existing directory; "
            "pass one of those names or a folder of images"
        )
    return folder_pool(path), path.resolve()


def load_probe_set(
    source: str | os.PathLike = "embedded",
    n: int = 128,
    seed: int = 0,
    skip_bad: bool = False,
    root: str | os.PathLike | None = None,
) -> ProbeSet:
    """Draw ``n`` probe images from a source, deterministically and balanced over classes.

    Sources:
        * ``"embedded"``: 500 Fashion-MNIST test images (50 per class) shipped in the package; needs no network.
        * a directory: class folders (torchvision ``ImageFolder`` layout, e.g. ImageNet's validation set) or a
          flat folder of images.
        * ``"fashion-mnist"`` or ``"fashion-mnist:DIR"``: the Fashion-MNIST test split from its IDX files
          (default ``/usr/share/datasets/fashion-mnist``, where Debian's ``dataset-fashion-mnist`` puts them).
        * ``"imagenette"`` or ``"imagenette:SIZE"`` (``320px`` by default, or ``160px``, ``full``): the
          validation split, downloaded by torchvision into ``root`` (default ``default_cache_dir()/imagenette``).
        * ``"synthetic"``: seeded generated images, flagged ``synthetic``; for smoke tests only.

    The draw follows :func:`~cka_probe.data.balanced_order`: the same seed gives the same images in the same
    order, and a smaller ``n`` gives a prefix of a larger one.

    Args:
        source: A named source or a directory.
        n: Number of images (128, as in the OFA-KD paper's CKA analysis).
        seed: Sampling seed (for ``"synthetic"``, the generation seed).
        skip_bad: Skip image files that do not decode, taking the next image in the order instead; the
            skipped ids are listed in ``skipped``. Otherwise such a file is an error that names it.
        root: Download folder of ``"imagenette"``; other sources ignore it.

    Returns:
        The :class:`~cka_probe.data.ProbeSet`.

    Raises:
        DataNotFoundError: Unknown source, missing or empty directory, missing dataset files, failed download.
        NotEnoughImagesError: The source holds fewer than ``n`` (readable) images.
        UnreadableImageError: An image does not decode and ``skip_bad`` is False.
        ArgumentError: ``n`` below 1 or ``seed`` negative.

    Example:
        >>> probe = load_probe_set("embedded", n=20, seed=0)
        >>> probe.n, len(set(probe.labels)), probe.images[0].mode, probe.images[0].size
        (20, 10, 'RGB', (28, 28))
    """
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ArgumentError(
            f"n must be a positive integer, got {n!r} (--num-images on the command line, data.n in a config)"
        )
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ArgumentError(
            f"seed must be a non-negative integer, got {seed!r} (--seed on the command line, data.seed in a config)"
        )
    pool, ids_root = _pool(os.fspath(source), n, seed, root)
    return draw(pool, n=n, seed=seed, skip_bad=skip_bad, root=ids_root)
