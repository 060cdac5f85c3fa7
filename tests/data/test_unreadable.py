"""Image files that do not decode: an error naming them, or skipped with skip_bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from cka_probe.data import balanced_order, load_probe_set
from cka_probe.errors import NotEnoughImagesError, UnreadableImageError

from .conftest import (
    make_flat_folder,
)


def _folder_with_a_bad_image(root: Path) -> tuple[Path, int]:
    """Four good images and one that does not decode; returns the folder and a seed drawing the bad one first."""
    make_flat_folder(root, count=4)
    (root / "bad.jpg").write_bytes(b"this is not a jpeg")
    ids = sorted(p.name for p in root.iterdir())
    seed = next(s for s in range(100) if ids[balanced_order(ids, None, s)[0]] == "bad.jpg")
    return root, seed


def test_unreadable_image_is_an_error_naming_the_file(tmp_path):
    root, seed = _folder_with_a_bad_image(tmp_path)
    with pytest.raises(UnreadableImageError, match=r"cannot read image .*bad\.jpg .*--skip-bad") as info:
        load_probe_set(root, n=2, seed=seed)
    assert "\n" not in str(info.value) and str(root / "bad.jpg") in str(info.value)


def test_skip_bad_skips_counts_and_replaces_the_unreadable_image(tmp_path):
    root, seed = _folder_with_a_bad_image(tmp_path)
    probe = load_probe_set(root, n=4, seed=seed, skip_bad=True)
    assert probe.skipped == ("bad.jpg",)
    assert probe.n == 4 and sorted(probe.image_ids) == [f"img_{i:02d}.png" for i in range(4)]
    assert probe.provenance()["skipped"] == ["bad.jpg"]
    with pytest.raises(NotEnoughImagesError, match="of which 1 are unreadable"):
        load_probe_set(root, n=5, seed=seed, skip_bad=True)
