"""The embedded Fashion-MNIST probe set, and draws from it."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from cka_probe.data import FASHION_MNIST_CLASSES, load_probe_set
from cka_probe.data.build_embedded import build_embedded
from cka_probe.errors import CKAProbeError, NotEnoughImagesError

from .conftest import (
    FASHION_MNIST_DIR,
    fashion_mnist_test_split,
    needs_fashion_mnist,
)

PACKAGE_DATA = Path(__file__).resolve().parents[2] / "cka_probe" / "data"


def test_embedded_default_is_128_images_balanced_over_the_10_classes():
    probe = load_probe_set()
    assert probe.n == 128 and probe.seed == 0
    assert probe.class_names == FASHION_MNIST_CLASSES
    assert sorted(Counter(probe.labels).values()) == [12, 12] + [13] * 8
    assert len(set(probe.image_ids)) == 128
    assert not probe.synthetic and "Fashion-MNIST" in probe.source and "MIT" in probe.source
    image = probe.images[5]
    assert image.mode == "RGB" and image.size == (28, 28)
    pixels = np.asarray(image)
    assert np.array_equal(pixels[..., 0], pixels[..., 1]) and np.array_equal(pixels[..., 1], pixels[..., 2])
    assert json.loads(json.dumps(probe.provenance()))["class_counts"]["Bag"] == 12


def test_embedded_file_is_small_and_ships_its_licence():
    archive = PACKAGE_DATA / "fashion_mnist_probe.npz"
    assert archive.stat().st_size < 500_000
    with np.load(archive) as data:
        assert data["images"].shape == (500, 28, 28) and data["images"].dtype == np.uint8
        assert np.bincount(data["labels"]).tolist() == [50] * 10
        assert np.all(np.diff(data["indices"]) > 0)
    licence = (PACKAGE_DATA / "fashion_mnist_probe.LICENSE.txt").read_text()
    assert "Zalando SE" in licence and "MIT License" in licence and "Permission is hereby granted" in licence


@needs_fashion_mnist
def test_embedded_images_are_the_fashion_mnist_test_images_they_claim_to_be():
    images, labels = fashion_mnist_test_split()
    probe = load_probe_set("embedded", n=40, seed=3)
    for position, index in enumerate(probe.image_ids):
        assert np.array_equal(np.asarray(probe.images[position])[..., 0], images[index])
        assert probe.labels[position] == labels[index]


@needs_fashion_mnist
def test_build_embedded_reproduces_the_shipped_file(tmp_path):
    built = build_embedded(FASHION_MNIST_DIR, tmp_path)
    with np.load(built) as fresh, np.load(PACKAGE_DATA / "fashion_mnist_probe.npz") as shipped:
        for key in ("images", "labels", "indices"):
            assert np.array_equal(fresh[key], shipped[key]), key
    assert (tmp_path / "fashion_mnist_probe.LICENSE.txt").read_text() == (
        PACKAGE_DATA / "fashion_mnist_probe.LICENSE.txt"
    ).read_text()


def test_n_larger_than_the_source_is_a_one_line_error_with_the_fix():
    with pytest.raises(NotEnoughImagesError, match=r"holds 500 images and n=501 were asked; ask for n <= 500") as info:
        load_probe_set("embedded", n=501)
    assert "\n" not in str(info.value) and isinstance(info.value, CKAProbeError)


def test_same_seed_same_images_other_seed_other_images():
    first, again, other = (load_probe_set("embedded", n=64, seed=s) for s in (1, 1, 2))
    assert first == again and first.image_list_sha256 == again.image_list_sha256
    assert np.array_equal(np.asarray(first.images[10]), np.asarray(again.images[10]))
    assert first.image_ids != other.image_ids and first.image_list_sha256 != other.image_list_sha256


@needs_fashion_mnist
@pytest.mark.parametrize("per_class", [0, 1001])
def test_build_embedded_refuses_a_per_class_count_out_of_range(tmp_path, per_class, capsys):
    from cka_probe.data.build_embedded import main
    from cka_probe.errors import ArgumentError

    with pytest.raises(ArgumentError, match=rf"per_class \(--per-class\) {per_class} is outside 1\.\.1000"):
        build_embedded(FASHION_MNIST_DIR, tmp_path / "a", per_class=per_class)
    with pytest.raises(SystemExit) as info:
        main(["--source", str(FASHION_MNIST_DIR), "--out-dir", str(tmp_path / "b"), "--per-class", str(per_class)])
    assert info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("Error: per_class (--per-class)") and "\n" not in err and "Traceback" not in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
