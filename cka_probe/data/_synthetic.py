"""Synthetic probe images: seeded smooth colour fields, for smoke tests only (never for results).

Image ``i`` of seed ``s`` is a 4x4 grid of random colours drawn from ``numpy.random.default_rng([s, i])``,
resized bilinearly to 64x64, so it does not depend on how many images are asked for.
"""

from __future__ import annotations

import functools

import numpy as np
from PIL import Image

from ._pool import Pool

__all__ = ["SYNTHETIC_SIZE", "synthetic_image", "synthetic_pool"]

SYNTHETIC_SIZE = 64


def synthetic_image(seed: int, index: int) -> Image.Image:
    """Synthetic image ``index`` of ``seed``: a 64x64 RGB image.

    Example:
        >>> import numpy as np
        >>> np.array_equal(np.asarray(synthetic_image(0, 3)), np.asarray(synthetic_image(0, 3)))
        True
    """
    grid = np.random.default_rng([seed, index]).integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
    return Image.fromarray(grid).resize((SYNTHETIC_SIZE, SYNTHETIC_SIZE), Image.Resampling.BILINEAR)


def synthetic_pool(n: int, seed: int) -> Pool:
    """``n`` synthetic images in index order, flagged synthetic and labelled as such in the source."""
    return Pool(
        kind=f"synthetic-seed{seed}",
        source=f"synthetic images (seed {seed}; generated colour fields for smoke tests, not natural images)",
        image_ids=list(range(n)),
        labels=None,
        class_names=None,
        load=functools.partial(synthetic_image, seed),
        shuffle=False,
        synthetic=True,
    )
