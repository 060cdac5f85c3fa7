"""Directories of images: class folders, flat folders, and their errors."""

from __future__ import annotations

from collections import Counter

import pytest

from cka_probe.data import load_probe_set
from cka_probe.errors import DataNotFoundError, NotEnoughImagesError

from .conftest import (
    CLASS_COLOURS,
    make_class_folders,
    make_flat_folder,
    write_image,
)


def test_class_folders_are_read_as_imagefolder_and_drawn_balanced(tmp_path):
    root = make_class_folders(tmp_path / "val", per_class=4)
    probe = load_probe_set(root, n=6, seed=0)
    assert probe.class_names == ("cat", "dog", "fox")
    assert Counter(probe.labels) == {0: 2, 1: 2, 2: 2}
    assert probe.kind == "folder" and str(root) in probe.source
    for image, label, image_id in zip(probe.images, probe.labels, probe.image_ids, strict=True):
        name = probe.class_names[label]
        assert image_id.startswith(f"{name}/{name}_") and image_id.endswith(".png")
        assert image.getpixel((3, 3)) == CLASS_COLOURS[name]  # the label belongs to the pixels shown


def test_folder_hash_does_not_depend_on_where_the_folder_is(tmp_path):
    here = load_probe_set(make_class_folders(tmp_path / "a" / "val", per_class=3), n=5, seed=1)
    there = load_probe_set(make_class_folders(tmp_path / "b" / "val", per_class=3), n=5, seed=1)
    assert here.image_list_sha256 == there.image_list_sha256 and here.source != there.source


def test_flat_folder_is_one_unlabelled_class_and_ignores_other_files(tmp_path):
    root = make_flat_folder(tmp_path, count=5)
    (root / "README.txt").write_text("not an image")
    probe = load_probe_set(str(root), n=5)
    assert probe.labels is None and probe.class_names is None and probe.class_counts() is None
    assert sorted(probe.image_ids) == [f"img_{i:02d}.png" for i in range(5)]
    assert probe.images[0].mode == "RGB"


def test_folder_with_too_few_images(tmp_path):
    with pytest.raises(NotEnoughImagesError, match="holds 3 images and n=4"):
        load_probe_set(make_flat_folder(tmp_path, count=3), n=4)


def test_missing_directory_is_a_one_line_error(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist") as info:
        load_probe_set(tmp_path / "nowhere")
    assert "\n" not in str(info.value)
    assert str(info.value).endswith(
        "use the embedded probe set (--data embedded; data.source: embedded in a config) or another folder of images"
    )


def test_empty_directory_is_a_one_line_error(tmp_path):
    (tmp_path / "empty_class").mkdir()
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(DataNotFoundError, match=r"holds no images \(\.jpg"):
        load_probe_set(tmp_path)


def test_a_file_is_not_a_directory(tmp_path):
    path = write_image(tmp_path / "one.png", (1, 2, 3))
    with pytest.raises(DataNotFoundError, match="is a file, not a directory"):
        load_probe_set(path)


def test_mixed_layout_is_refused(tmp_path):
    make_class_folders(tmp_path, per_class=1)
    write_image(tmp_path / "stray.png", (0, 0, 0))
    with pytest.raises(DataNotFoundError, match="both at its top level and in sub-folders"):
        load_probe_set(tmp_path, n=2)


def test_unknown_source_name_lists_the_named_sources():
    with pytest.raises(DataNotFoundError, match=r"'imagenet' is neither a named source \(embedded, fashion-mnist"):
        load_probe_set("imagenet")
