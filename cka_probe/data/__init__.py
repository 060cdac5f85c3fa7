"""Probe data: the images a CKA analysis feeds to both models, and their deterministic sampling.

Public API::

    from cka_probe.data import load_probe_set, batches

* :func:`load_probe_set` draws ``n`` images (128 by default, as in the OFA-KD paper) from a source:
  ``"embedded"`` (a Fashion-MNIST test subset shipped in the package, so a fresh machine needs no network),
  a directory (class folders or flat), ``"fashion-mnist[:DIR]"``, ``"imagenette[:SIZE]"`` or ``"synthetic"``.
  The draw is seeded and balanced over classes; the result is a :class:`ProbeSet` with its provenance.
* :func:`batches` turns a probe set and a model's transform into ``(images, positions)`` tensor batches, in
  the probe set's order.

A probe set names its images twice: ``image_list_sha256`` (the source kind and the ordered ids) and
``content_sha256`` (the bytes of every image file, or the pixels of images held in memory), so an image
edited in place changes the second.

Downloaded data sets (Imagenette) go to :func:`default_cache_dir`: ``$CKA_PROBE_CACHE/datasets`` when
``CKA_PROBE_CACHE`` is set, else ``$XDG_CACHE_HOME/cka-probe/datasets`` (``~/.cache/cka-probe/datasets``).
Feature files go to the ``features`` folder beside it (:mod:`cka_probe.engine.cache`), never among the
data sets.

The embedded images come from Fashion-MNIST, (c) 2017 Zalando SE, under the MIT licence; see
``fashion_mnist_probe.LICENSE.txt`` in this folder and :mod:`cka_probe.data.build_embedded`.
"""

from ._fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from ._fashion_mnist import DEBIAN_FASHION_MNIST, read_fashion_mnist
from ._loader import ProbeDataset, batches
from ._probe_set import LazyImages, ProbeSet, balanced_order, image_list_sha256
from ._sources import SOURCES, default_cache_dir, load_probe_set
from ._synthetic import synthetic_image

__all__ = [
    "DEBIAN_FASHION_MNIST",
    "FASHION_MNIST_CLASSES",
    "SOURCES",
    "LazyImages",
    "ProbeDataset",
    "ProbeSet",
    "balanced_order",
    "batches",
    "default_cache_dir",
    "image_list_sha256",
    "load_probe_set",
    "read_fashion_mnist",
    "synthetic_image",
]
