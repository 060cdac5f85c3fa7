"""Fashion-MNIST read from its IDX files (Debian's dataset-fashion-mnist)."""

from __future__ import annotations

import gzip
from collections import Counter

import numpy as np
import pytest

from cka_probe.data import load_probe_set
from cka_probe.errors import DataNotFoundError

from .conftest import (
    FASHION_MNIST_DIR,
    fashion_mnist_test_split,
    needs_fashion_mnist,
)


@needs_fashion_mnist
def test_fashion_mnist_from_debian_files_is_balanced_and_matches_the_files():
    images, labels = fashion_mnist_test_split()
    probe = load_probe_set("fashion-mnist", n=50, seed=0)
    assert Counter(probe.labels) == {c: 5 for c in range(10)}
    assert str(FASHION_MNIST_DIR) in probe.source and probe.kind == "fashion-mnist-test"
    assert all(0 <= i < 10_000 for i in probe.image_ids)
    for position in (0, 17, 49):
        index = probe.image_ids[position]
        assert np.array_equal(np.asarray(probe.images[position])[..., 2], images[index])
        assert probe.labels[position] == labels[index]


@needs_fashion_mnist
def test_fashion_mnist_reads_plain_idx_files_in_a_given_directory(tmp_path):
    for name in ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):
        (tmp_path / name).write_bytes(gzip.decompress((FASHION_MNIST_DIR / f"{name}.gz").read_bytes()))
    plain = load_probe_set(f"fashion-mnist:{tmp_path}", n=30, seed=9)
    packed = load_probe_set("fashion-mnist", n=30, seed=9)
    assert plain.image_ids == packed.image_ids and plain.image_list_sha256 == packed.image_list_sha256
    assert np.array_equal(np.asarray(plain.images[3]), np.asarray(packed.images[3]))


def test_fashion_mnist_directory_without_the_files_says_how_to_get_them(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"t10k-images-idx3-ubyte\[\.gz\] is not in .*dataset-fashion-mnist"):
        load_probe_set(f"fashion-mnist:{tmp_path}")


def test_corrupt_fashion_mnist_file_is_a_one_line_error(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x08\x03" + b"\x00" * 5)
    (tmp_path / "t10k-labels-idx1-ubyte").write_bytes(b"\x00\x00\x08\x01\x00\x00\x00\x00")
    with pytest.raises(DataNotFoundError, match="cannot read the Fashion-MNIST test files") as info:
        load_probe_set(f"fashion-mnist:{tmp_path}", n=1)
    assert "\n" not in str(info.value)


def test_unknown_split_names_the_two(tmp_path):
    from cka_probe.data import read_fashion_mnist
    from cka_probe.errors import ArgumentError

    with pytest.raises(ArgumentError, match="unknown Fashion-MNIST split 'val'; use 'test' or 'train'"):
        read_fashion_mnist(tmp_path, "val")
