"""The feature cache: a second run skips the forward pass, a damaged entry is recomputed, never used."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from PIL import Image

from cka_probe._files import STALE_AFTER_S, atomic_path
from cka_probe.data import load_probe_set
from cka_probe.engine.cache import CacheCorruptWarning, FeatureCache, feature_key
from cka_probe.engine.features import FeatureSettings, ModelRequest, model_features
from cka_probe.jobs import compare


def _compare(cache, **kw):
    return compare(
        "test_resnet", "test_vit", "embedded", n=8, weights="random", progress=False, device="cpu", cache=cache, **kw
    )


def test_second_compare_reuses_both_models_features(tmp_path, monkeypatch):
    first = _compare(tmp_path)
    assert first.metadata["seconds"]["features_from_cache"] == {"a": False, "b": False}
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2

    import cka_probe.engine.features as features_module

    def no_forward(*args, **kwargs):
        raise AssertionError("the forward pass ran although the features were cached")

    monkeypatch.setattr(features_module, "extract_features", no_forward)
    second = _compare(tmp_path)
    assert second.metadata["seconds"]["features_from_cache"] == {"a": True, "b": True}
    np.testing.assert_array_equal(second.matrix.to_numpy(), first.matrix.to_numpy())
    assert second.metadata["layers"] == first.metadata["layers"]
    assert second.metadata["models"]["a"]["timm_name"] == "test_resnet"


def test_key_separates_what_changes_features(tmp_path):
    _compare(tmp_path)
    _compare(tmp_path, seed=1)  # another image subset and other random weights
    _compare(tmp_path, tokens="all")  # the token rule is part of every key (a model is not built to look)
    assert len(list(tmp_path.glob("*.safetensors"))) == 6
    _compare(tmp_path)
    assert len(list(tmp_path.glob("*.safetensors"))) == 6


def test_gram_precision_keys_flattened_features_only(tmp_path):
    # float32 Grams of flattened layers are other numbers than float64 ones: another entry. Pooled features
    # do not depend on the precision: one entry for both.
    _compare(tmp_path, pool="flatten")
    _compare(tmp_path, pool="flatten", precision="float32")
    assert len(list(tmp_path.glob("*.safetensors"))) == 4
    _compare(tmp_path, pool="mean")
    _compare(tmp_path, pool="mean", precision="float32")
    assert len(list(tmp_path.glob("*.safetensors"))) == 6


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete"])
def test_damaged_entry_is_recomputed_with_a_warning(tmp_path, damage):
    cache = FeatureCache(tmp_path)
    probe = load_probe_set("embedded", n=8)
    request, settings = ModelRequest("test_resnet", weights="random"), FeatureSettings()
    reference = model_features(request, probe, settings, cache=cache, progress=False)
    data_file = next(tmp_path.glob("*.safetensors"))
    raw = data_file.read_bytes()
    if damage == "truncate":
        data_file.write_bytes(raw[: len(raw) // 2])
    elif damage == "flip":
        data_file.write_bytes(raw[:-5] + bytes([raw[-5] ^ 0xFF]) + raw[-4:])
    else:
        data_file.unlink()
    with pytest.warns(CacheCorruptWarning, match=data_file.name):
        again = model_features(request, probe, settings, cache=cache, progress=False)
    assert again.extra["cached"] is False
    for name in reference.features:
        np.testing.assert_array_equal(again.features[name].numpy(), reference.features[name].numpy())
    meta = json.loads(data_file.with_suffix(".json").read_text())
    assert meta["size"] == data_file.stat().st_size  # the entry was rewritten whole
    assert model_features(request, probe, settings, cache=cache, progress=False).extra["cached"] is True


def test_no_cache_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.setenv("CKA_PROBE_CACHE", str(tmp_path))
    _compare(False)
    assert list(tmp_path.iterdir()) == []
    _compare(True)
    assert len(list((tmp_path / "features").glob("*.safetensors"))) == 2


# --------------------------------------------------------------------------- what the key covers


def _features(cache, source="embedded", request=None, **settings):
    probe = load_probe_set(source, n=8)
    return model_features(
        request or ModelRequest("test_resnet", weights="random"),
        probe,
        FeatureSettings(**settings),
        cache=cache,
        progress=False,
    )


def _assert_features_differ(a, b):
    assert list(a.features) == list(b.features)
    assert not all(np.array_equal(a.features[k].numpy(), b.features[k].numpy()) for k in a.features)


def _assert_features_equal(a, b):
    assert list(a.features) == list(b.features)
    for name in a.features:
        np.testing.assert_array_equal(a.features[name].numpy(), b.features[name].numpy())


def test_images_edited_in_place_are_a_new_key(tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(8):
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(folder / f"img_{i}.png")
    cache = FeatureCache(tmp_path / "cache")
    first = _features(cache, folder)
    assert _features(cache, folder).extra["cached"] is True
    for path in sorted(folder.iterdir()):  # new pixels under the same names, sizes and modification times
        stat = path.stat()
        Image.fromarray(rng.integers(0, 256, (24, 24, 3), dtype=np.uint8)).save(path)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    edited = _features(cache, folder)
    assert edited.extra["cached"] is False
    _assert_features_differ(edited, first)
    _assert_features_equal(edited, _features(None, folder))  # what the edited images give without any cache
    assert _features(cache, folder).extra["cached"] is True


def test_other_torch_or_timm_versions_are_a_new_key(tmp_path, monkeypatch):
    import timm
    import torch

    cache = FeatureCache(tmp_path)
    _features(cache)
    monkeypatch.setattr(timm, "__version__", "9.9.9")
    assert _features(cache).extra["cached"] is False
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert _features(cache).extra["cached"] is False
    assert _features(cache).extra["cached"] is True
    assert len(list(tmp_path.glob("*.safetensors"))) == 3


def test_a_rewritten_checkpoint_is_a_new_key(tmp_path):
    import timm
    import torch

    checkpoint = tmp_path / "weights.pth"
    torch.manual_seed(1)
    torch.save(timm.create_model("test_resnet").state_dict(), checkpoint)
    request = ModelRequest("test_resnet", checkpoint=str(checkpoint))
    cache = FeatureCache(tmp_path / "cache")
    first = _features(cache, request=request)
    torch.manual_seed(2)
    torch.save(timm.create_model("test_resnet").state_dict(), checkpoint)
    again = _features(cache, request=request)
    assert again.extra["cached"] is False
    _assert_features_differ(again, first)


def _entry(tmp_path, **settings):
    cache = FeatureCache(tmp_path)
    reference = _features(cache, **settings)
    data_file = next(tmp_path.glob("*.safetensors"))
    return cache, reference, data_file, data_file.with_suffix(".json")


def _swap(items, i, j):
    items[i], items[j] = items[j], items[i]


@pytest.mark.parametrize("edit", ["layer list", "layer list and facts"])
def test_a_sidecar_with_another_layer_order_is_recomputed_with_a_warning(tmp_path, edit):
    cache, reference, _, sidecar = _entry(tmp_path)
    meta = json.loads(sidecar.read_text())
    _swap(meta["layers"], 2, 5)
    if edit == "layer list and facts":
        _swap(meta["layer_info"], 2, 5)
    sidecar.write_text(json.dumps(meta))
    expected = "different orders" if edit == "layer list" else "differs from the order stored with the features"
    with pytest.warns(CacheCorruptWarning, match=expected):
        again = _features(cache)
    assert again.extra["cached"] is False
    _assert_features_equal(again, reference)
    assert json.loads(sidecar.read_text())["layers"] == list(reference.features)  # the entry was rewritten


def test_an_entry_holding_a_layer_outside_the_requested_selection_is_recomputed(tmp_path):
    from safetensors.torch import load_file, save_file

    from cka_probe._files import sha256_file

    patterns = ["layer1.*.act*", "layer4.*.act*"]
    cache, reference, data_file, sidecar = _entry(tmp_path, layers=patterns)
    assert list(reference.features) == ["layer1.0.act1", "layer1.0.act2", "layer4.0.act1", "layer4.0.act2"]
    # a self-consistent entry (order, facts, size, hash) whose last layer is the stem's act1, never asked for
    names = ["layer1.0.act1", "layer1.0.act2", "layer4.0.act1", "act1"]
    tensors = load_file(str(data_file))
    renamed = dict(zip(names, (tensors[k] for k in reference.features), strict=True))
    save_file(renamed, str(data_file), metadata={"layers": json.dumps(names)})
    meta = json.loads(sidecar.read_text())
    meta["layer_info"][-1].update(name="act1", module_name="act1")
    meta.update(layers=names, size=data_file.stat().st_size, sha256=sha256_file(data_file))
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(CacheCorruptWarning, match="holds layers outside the requested selection"):
        again = _features(cache, layers=patterns)
    _assert_features_equal(again, reference)


def _extra_fact(meta):
    meta["layer_info"][0]["colour"] = "blue"


def _missing_fact(meta):
    del meta["layer_info"][1]["pooled_dim"]


def _other_n(meta):
    meta["n"] = 7


def _n_as_text(meta):
    meta["n"] = "8"


def _facts_not_a_list(meta):
    meta["layer_info"] = 3


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_extra_fact, "layer facts do not have the fields"),
        (_missing_fact, "layer facts do not have the fields"),
        (_other_n, r"its n \(7\) differs from the n of its key \(8\)"),
        (_n_as_text, r"its n \('8'\) differs"),
        (_facts_not_a_list, "cannot be read"),
    ],
    ids=["extra-fact", "missing-fact", "other-n", "n-as-text", "facts-not-a-list"],
)
def test_a_damaged_sidecar_is_a_corrupt_entry_recomputed_and_replaced(tmp_path, edit, expected):
    cache, reference, _, sidecar = _entry(tmp_path)
    meta = json.loads(sidecar.read_text())
    edit(meta)
    sidecar.write_text(json.dumps(meta))
    with pytest.warns(CacheCorruptWarning, match=expected):
        again = _features(cache)
    assert again.extra["cached"] is False and again.n == 8
    _assert_features_equal(again, reference)
    assert json.loads(sidecar.read_text())["layer_info"] == json.loads(json.dumps(_facts(reference)))  # replaced
    assert _features(cache).extra["cached"] is True


def test_a_foreign_sidecar_is_a_corrupt_entry_recomputed_and_replaced(tmp_path):
    """Another entry's sidecar put in this entry's place (a copy gone wrong): warned, recomputed, replaced."""
    cache, reference, _, sidecar = _entry(tmp_path)
    other = _features(cache, request=ModelRequest("test_vit", weights="random"))
    foreign = next(p for p in tmp_path.glob("test_vit-*.json"))
    sidecar.write_text(foreign.read_text())
    with pytest.warns(CacheCorruptWarning, match="its key record differs from the one asked for"):
        again = _features(cache)
    _assert_features_equal(again, reference)
    assert json.loads(sidecar.read_text())["key"]["model"]["name"] == "test_resnet"
    assert list(other.features) != list(again.features)


def test_a_damaged_sidecar_lets_compare_run_again(tmp_path):
    """What the user saw: every rerun ended with a TypeError traceback (exit 1) until the entry was removed."""
    from click.testing import CliRunner

    from cka_probe.cli.main import main

    args = ["compare", "test_resnet", "test_vit", "--weights", "random", "-n", "8", "--no-progress"]
    args += ["--cache-dir", str(tmp_path / "cache"), "--device", "cpu"]
    assert CliRunner().invoke(main, [*args, "--out", str(tmp_path / "a")]).exit_code == 0
    for sidecar in (tmp_path / "cache").glob("*.json"):
        meta = json.loads(sidecar.read_text())
        _extra_fact(meta)
        sidecar.write_text(json.dumps(meta))
    result = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "b")])
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output and "TypeError" not in result.output
    assert (tmp_path / "a" / "test_resnet_vs_test_vit.csv").read_text() == (
        tmp_path / "b" / "test_resnet_vs_test_vit.csv"
    ).read_text()


def _facts(extracted):
    from dataclasses import asdict

    return [asdict(info) for info in extracted.layers]


# --------------------------------------------------------------------------- temporary files left by kill -9

_WRITER = """
import sys, time
from cka_probe._files import atomic_path
with atomic_path(sys.argv[1]) as tmp:
    tmp.write_bytes(b"half an entry")
    print(tmp.name, flush=True)
    time.sleep(600)
"""


def _writer_in_the_middle(target):
    """A subprocess holding a half-written temporary file of ``target``; returns it and the file's name."""
    proc = subprocess.Popen([sys.executable, "-c", _WRITER, str(target)], stdout=subprocess.PIPE, text=True)
    name = proc.stdout.readline().strip()
    assert name.endswith(".tmp") and (target.parent / name).exists()
    return proc, name


def test_a_rerun_removes_the_temporary_file_of_a_writer_killed_by_sigkill(tmp_path):
    cache = FeatureCache(tmp_path)
    probe = load_probe_set("embedded", n=8)
    request, settings = ModelRequest("test_resnet", weights="random"), FeatureSettings()
    key = feature_key(request.key_record(), probe.provenance(), settings.record())
    data_path, _ = cache.paths(key)
    proc, name = _writer_in_the_middle(data_path)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stdout.close()
    assert (tmp_path / name).exists() and not data_path.exists()  # kill -9: nothing could clean up
    result = model_features(request, probe, settings, cache=cache, progress=False)
    assert result.extra["cached"] is False
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([data_path.name, data_path.with_suffix(".json").name])


def test_a_live_writers_temporary_file_is_kept(tmp_path):
    target = tmp_path / "table.csv"
    proc, name = _writer_in_the_middle(target)
    try:
        with atomic_path(target) as tmp:
            tmp.write_text("mine\n")
        assert (tmp_path / name).read_bytes() == b"half an entry"  # the other writer is still at work
        assert target.read_text() == "mine\n"
    finally:
        proc.kill()
        proc.wait()
        proc.stdout.close()
    with atomic_path(target) as tmp:
        tmp.write_text("again\n")
    assert [p.name for p in tmp_path.iterdir()] == ["table.csv"]


def test_temporary_files_that_name_no_live_process_here_go_by_age(tmp_path):
    target = tmp_path / "table.csv"
    legacy = tmp_path / ".table.csv.k2j4x9q1.tmp"  # written by a version that did not record its process
    other_host = tmp_path / ".table.csv.elsewhere-12.ab12cd34.tmp"  # another node of a shared filesystem
    other_target = tmp_path / ".summary.csv.k2j4x9q1.tmp"
    for path in (legacy, other_host, other_target):
        path.write_bytes(b"x")
        old = time.time() - STALE_AFTER_S - 60
        os.utime(path, (old, old))
    recent = tmp_path / ".table.csv.elsewhere-13.ab12cd35.tmp"
    recent.write_bytes(b"x")
    with atomic_path(target) as tmp:
        tmp.write_text("t\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["table.csv", recent.name, other_target.name])
