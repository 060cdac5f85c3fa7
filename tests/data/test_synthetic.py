"""Synthetic images: seeded, flagged, labelled as synthetic."""

from __future__ import annotations

import numpy as np

from cka_probe.data import load_probe_set


def test_synthetic_images_are_seeded_flagged_and_labelled_as_synthetic():
    first, again, other = (load_probe_set("synthetic", n=3, seed=s) for s in (0, 0, 1))
    assert first.synthetic and "synthetic" in first.source and "not natural images" in first.source
    assert first.labels is None and first.image_ids == (0, 1, 2)
    pixels = [np.asarray(image) for image in first.images]
    assert all(p.shape == (64, 64, 3) for p in pixels)
    assert all(np.array_equal(p, np.asarray(q)) for p, q in zip(pixels, again.images, strict=True))
    assert not np.array_equal(pixels[0], pixels[1])
    assert not np.array_equal(pixels[0], np.asarray(other.images[0]))
    assert first.image_list_sha256 != other.image_list_sha256
    assert np.array_equal(np.asarray(load_probe_set("synthetic", n=10, seed=0).images[2]), pixels[2])
