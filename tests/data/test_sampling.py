"""The seeded, class-balanced draw and the image-list hash."""

from __future__ import annotations

import hashlib
import random
from collections import Counter

import pytest

from cka_probe.data import balanced_order, image_list_sha256, load_probe_set
from cka_probe.errors import ArgumentError


def _labels_in_order(labels, order):
    return [labels[p] for p in order]


def test_order_is_a_permutation_and_every_prefix_is_balanced():
    labels = [i % 4 for i in range(40)]
    ids = [f"img{i}" for i in range(40)]
    order = balanced_order(ids, labels, seed=0)
    assert sorted(order) == list(range(40))
    for k in range(1, 41):
        counts = Counter(_labels_in_order(labels, order[:k]))
        assert max(counts.values()) - min(counts.get(c, 0) for c in range(4)) <= 1, k


def test_round_robin_takes_classes_in_label_order_and_drops_exhausted_ones():
    labels = ["b", "a", "a", "a", "b", "c"]
    ids = list("uvwxyz")
    assert _labels_in_order(labels, balanced_order(ids, labels, seed=1)) == ["a", "b", "c", "a", "b", "a"]


def test_same_seed_same_order_other_seed_other_order():
    ids = list(range(100))
    labels = [i % 5 for i in ids]
    assert balanced_order(ids, labels, 7) == balanced_order(ids, labels, 7)
    assert balanced_order(ids, labels, 7) != balanced_order(ids, labels, 8)


def test_order_depends_on_ids_not_on_listing_order():
    ids = [f"n{i:03d}.jpg" for i in range(30)]
    labels = [i % 3 for i in range(30)]
    pairs = list(zip(ids, labels, strict=True))
    random.Random(0).shuffle(pairs)
    shuffled_ids, shuffled_labels = zip(*pairs, strict=True)
    drawn = [ids[p] for p in balanced_order(ids, labels, seed=2)]
    drawn_from_shuffled = [shuffled_ids[p] for p in balanced_order(shuffled_ids, shuffled_labels, seed=2)]
    assert drawn == drawn_from_shuffled


def test_without_labels_it_is_a_seeded_shuffle():
    ids = list(range(50))
    order = balanced_order(ids, None, seed=0)
    assert sorted(order) == ids and order != ids
    assert order == balanced_order(ids, None, seed=0) != balanced_order(ids, None, seed=1)


def test_the_documented_order_is_stable_across_versions():
    """Pinned: changing the shuffle would silently change every published probe set."""
    probe = load_probe_set("embedded", n=10, seed=0)
    assert probe.image_ids == (272, 15, 87, 366, 404, 323, 282, 333, 209, 392)
    assert probe.labels == tuple(range(10))
    assert probe.image_list_sha256 == "37549b9751e6556f5a99fadfc432b369e3af0623af473fd8f73d0850cc07e4a2"


def test_smaller_n_is_a_prefix_of_larger_n():
    small, large = load_probe_set("embedded", n=30, seed=4), load_probe_set("embedded", n=90, seed=4)
    assert large.image_ids[:30] == small.image_ids
    assert load_probe_set("embedded", n=30, seed=5).image_ids != small.image_ids


def test_image_list_hash_is_sha256_of_a_header_the_kind_and_one_id_per_line():
    expected = hashlib.sha256(b"cka-probe image list v1\nfolder\na.png\n7").hexdigest()
    assert image_list_sha256("folder", ["a.png", 7]) == expected


def test_image_list_hash_depends_on_kind_ids_and_their_order():
    base = image_list_sha256("folder", ["a.png", "b.png"])
    assert len(base) == 64 and base == image_list_sha256("folder", ["a.png", "b.png"])
    assert base != image_list_sha256("folder", ["b.png", "a.png"])
    assert base != image_list_sha256("imagenette", ["a.png", "b.png"])
    assert base != image_list_sha256("folder", ["a.png"])
    assert image_list_sha256("folder", ["ab", "c"]) != image_list_sha256("folder", ["a", "bc"])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_n_must_be_a_positive_integer(bad):
    with pytest.raises(ArgumentError, match=r"n must be a positive integer, got .* \(--num-images on the command line"):
        load_probe_set("synthetic", n=bad)


def test_seed_must_be_non_negative():
    with pytest.raises(
        ArgumentError, match=r"seed must be a non-negative integer, got -1 \(--seed on the command line"
    ):
        load_probe_set("embedded", n=4, seed=-1)


def test_batches_need_a_positive_batch_size():
    import torchvision.transforms.functional as F

    from cka_probe.data import batches

    probe = load_probe_set("synthetic", n=3)
    with pytest.raises(
        ArgumentError, match=r"batch_size must be at least 1, got 0 \(--batch-size on the command line\)"
    ):
        next(batches(probe, F.to_tensor, 0))


def test_a_probe_set_with_parts_of_different_lengths_is_refused():
    import dataclasses

    from cka_probe.data import ProbeSet

    probe = load_probe_set("synthetic", n=3)
    values = {f.name: getattr(probe, f.name) for f in dataclasses.fields(ProbeSet) if f.init}
    with pytest.raises(
        ArgumentError,
        match="probe set parts differ in length: 2 images, 3 ids, no labels; build it with load_probe_set",
    ):
        ProbeSet(**{**values, "images": list(probe.images)[:2]})
