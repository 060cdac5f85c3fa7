"""Spooled Grams: flattened layers over many batches wait on disk, one batch is read at a time, numbers unchanged."""

from __future__ import annotations

import gc
import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from cka_probe.data import load_probe_set
from cka_probe.engine.cache import CacheCorruptWarning, FeatureCache
from cka_probe.engine.estimation import CKASettings, pair_tables
from cka_probe.engine.features import FeatureSettings, ModelRequest, model_features
from cka_probe.engine.spool import GramSpool, SpooledGrams
from cka_probe.errors import ShapeError, SpooledGramsError
from cka_probe.jobs import compare
from cka_probe.math import Gram, MinibatchCKA


def _grams(sizes, layers=("a", "b"), seed=0):
    g = torch.Generator().manual_seed(seed)
    batches = []
    for b in sizes:
        batch = {}
        for name in layers:
            x = torch.randn(b, 3 + b, generator=g, dtype=torch.float64)
            batch[name] = [x @ x.T]
        batches.append(batch)
    return batches


def test_a_spool_gives_back_every_batch_bit_for_bit_and_travels_by_value():
    batches = _grams([5, 5, 7])
    spool = GramSpool()
    for batch in batches:
        spool.append(batch)
    directory = spool.directory
    assert sorted(p.name for p in directory.iterdir()) == [f"batch{k}.safetensors" for k in range(3)]
    view = spool.layer("b")
    assert isinstance(view, SpooledGrams) and len(view) == 3 and view.sizes == [5, 5, 7]
    for k, batch in enumerate(batches):
        assert torch.equal(view[k], batch["b"][0])
    assert torch.equal(view[-1], batches[2]["b"][0]) and [g.shape[0] for g in view[1:]] == [5, 7]
    with pytest.raises(IndexError):
        view[3]
    copied = pickle.loads(pickle.dumps(view))  # another process gets the list itself
    assert isinstance(copied, list) and all(torch.equal(x, y) for x, y in zip(copied, view))
    del spool, view
    gc.collect()
    assert not directory.exists()  # a temporary spool goes with its last reader


def test_a_spool_refuses_a_batch_that_does_not_match_the_first():
    spool = GramSpool()
    spool.append(_grams([4])[0])
    with pytest.raises(ShapeError, match="one Gram of every layer"):
        spool.append(_grams([4], layers=("b", "a"))[0])


def test_pair_tables_on_spooled_grams_equal_the_grams_held_in_memory():
    sizes = [6, 6, 8]
    spools = {}
    held = {}
    for label, seed in (("x", 1), ("y", 2)):
        batches = _grams(sizes, seed=seed)
        spool = GramSpool()
        for batch in batches:
            spool.append(batch)
        spools[label] = {name: spool.layer(name) for name in ("a", "b")}
        held[label] = {name: [batch[name][0] for batch in batches] for name in ("a", "b")}
    settings = CKASettings(estimator="minibatch", batch_size=6)
    spooled = pair_tables(spools, [("x", "y")], settings)[("x", "y")]
    in_memory = pair_tables(held, [("x", "y")], settings)[("x", "y")]
    np.testing.assert_array_equal(spooled.to_numpy(), in_memory.to_numpy())
    metric = MinibatchCKA()  # the estimator itself, batch by batch
    for k in range(len(sizes)):
        metric.update({n: Gram(held["x"][n][k]) for n in ("a", "b")}, {n: Gram(held["y"][n][k]) for n in ("a", "b")})
    np.testing.assert_allclose(spooled.to_numpy(), metric.compute().values.numpy(), rtol=1e-12)


def _features(cache, n=24, batch_size=8):
    probe = load_probe_set("embedded", n=n, seed=0)
    settings = FeatureSettings(pool="flatten", batch_size=batch_size)
    request = ModelRequest("test_resnet", weights="random")
    store = FeatureCache(cache) if cache is not None else None
    return model_features(request, probe, settings, device="cpu", cache=store, progress=False)


def test_a_run_over_many_batches_holds_no_gram_in_memory(tmp_path):
    extracted = _features(None)
    values = list(extracted.features.values())
    assert all(isinstance(v, SpooledGrams) for v in values) and len({id(v.spool) for v in values}) == 1
    spool = values[0].spool
    assert len(spool.files) == 3 and spool._loaded is None  # on disk only, until read
    assert [g.shape for g in values[0]] == [(8, 8)] * 3
    assert spool._loaded[0] == 2  # reading layer after layer keeps one batch


def test_cached_spooled_grams_are_renamed_into_the_entry_and_read_from_it(tmp_path):
    first = _features(tmp_path)
    assert not list(tmp_path.glob(".spool*"))  # the spool's files became the entry's
    parts = sorted(tmp_path.glob("*.gram*.safetensors"))
    assert len(parts) == 3 and not [p for p in tmp_path.glob("*.safetensors") if ".gram" not in p.name]
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert [part["batch_size"] for part in meta["parts"]] == [8, 8, 8]
    second = _features(tmp_path)
    assert second.extra["cached"] and all(isinstance(v, SpooledGrams) for v in second.features.values())
    for name, value in first.features.items():
        assert all(torch.equal(x, y) for x, y in zip(value, second.features[name]))

    parts[1].write_bytes(parts[1].read_bytes()[:-8])  # a damaged batch file: recomputed, never used
    with pytest.warns(CacheCorruptWarning, match="batch 1"):
        third = _features(tmp_path)
    assert not third.extra["cached"]
    for name, value in first.features.items():
        assert all(torch.equal(x, y) for x, y in zip(value, third.features[name]))


def test_compare_over_many_batches_gives_the_same_table_with_and_without_the_cache(tmp_path):
    def run(cache):
        with warnings.catch_warnings():
            warnings.simplefilter("error", CacheCorruptWarning)
            return compare(
                "test_resnet",
                "test_vit",
                "embedded",
                n=24,
                batch_size=8,
                pool="flatten",
                estimator="minibatch",
                weights="random",
                progress=False,
                device="cpu",
                cache=cache,
            )

    cold, warm, none = run(tmp_path), run(tmp_path), run(False)
    assert warm.metadata["seconds"]["features_from_cache"] == {"a": True, "b": True}
    np.testing.assert_array_equal(warm.matrix.to_numpy(), cold.matrix.to_numpy())
    np.testing.assert_array_equal(none.matrix.to_numpy(), cold.matrix.to_numpy())


def test_a_spool_left_by_a_killed_process_is_removed_by_the_next_one(tmp_path):
    import os
    import subprocess
    import sys

    from cka_probe._files import temp_prefix

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead_pid = int(gone.stdout)
    mine = temp_prefix(tmp_path / "spool")
    dead = tmp_path / (mine.replace(f"-{os.getpid()}.", f"-{dead_pid}.") + "abc.tmp")
    live = tmp_path / (mine + "def.tmp")
    for directory in (dead, live):
        directory.mkdir()
        (directory / "batch0.safetensors").write_bytes(b"x")
    spool = GramSpool.inside(tmp_path)
    assert not dead.exists() and live.exists()  # a live writer's spool is never removed
    assert spool.directory.name.startswith(mine) and spool.directory.name.endswith(".tmp")


def test_grams_removed_during_the_run_are_one_line(tmp_path):
    spool = GramSpool(tmp_path)
    for batch in _grams([4, 4]):
        spool.append(batch)
    view = spool.layer("a")
    spool.files[1].unlink()
    assert torch.equal(view[0], view[0])
    with pytest.raises(SpooledGramsError, match="batch 1 .*run again") as info:
        view[1]
    assert "\n" not in str(info.value)


def test_a_batch_file_replaced_after_the_entry_was_checked_is_one_line_not_other_numbers(tmp_path):
    # The cache checks every batch file when it loads an entry; a file replaced after that (another job writing
    # other Grams under the same name) has the same size and is valid safetensors, and was read unchecked before.
    spool = GramSpool(tmp_path)
    for batch in _grams([4, 4]):
        spool.append(batch)
    other = GramSpool(tmp_path / "other")
    for batch in _grams([4, 4], seed=1):
        other.append(batch)
    view = spool.layer("a")
    assert spool.files[1].stat().st_size == other.files[1].stat().st_size
    spool.files[1].write_bytes(other.files[1].read_bytes())
    assert torch.equal(view[0], view[0])
    with pytest.raises(SpooledGramsError, match="batch 1: it changed during the run") as info:
        view[1]
    assert "\n" not in str(info.value)


def test_the_same_grams_give_the_same_file_bytes(tmp_path):
    # The metadata is one key, so the bytes do not depend on the order in which safetensors writes keys (it changes
    # from process to process): a job recomputing an entry leaves the files that a reader holds as they were.
    digests = []
    for folder in ("one", "two"):
        spool = GramSpool(tmp_path / folder)
        for batch in _grams([4, 5]):
            spool.append(batch)
        digests.append(spool.digests)
        assert [len(d) for d in spool.digests] == [64, 64]
    assert digests[0] == digests[1]
    from safetensors import safe_open

    with safe_open(str(spool.files[0]), framework="pt") as handle:
        assert set(handle.metadata()) == {"layers"}  # two keys came out in either order from one process to the next


def test_a_spool_that_cannot_be_written_is_one_line(tmp_path, monkeypatch):
    import cka_probe.engine.spool as spool_module

    def full_disk(*args, **kwargs):
        raise OSError(28, "No space left on device")

    def half_written(self, data):
        with open(self, "wb") as handle:
            handle.write(data[: len(data) // 2])
        full_disk()

    monkeypatch.setattr(spool_module.Path, "write_bytes", half_written)
    spool = GramSpool(tmp_path)
    with pytest.raises(SpooledGramsError, match="batch 0 .*No space left on device.*--cache-dir") as info:
        spool.append(_grams([4])[0])
    assert "\n" not in str(info.value)
    assert not list(tmp_path.iterdir())  # nothing half-written left behind
