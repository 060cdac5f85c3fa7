"""The feature cache: a second run skips the forward pass, a damaged entry is recomputed, never used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from cka_probe.analysis import compare
from cka_probe.analysis.cache import CacheCorruptWarning, FeatureCache
from cka_probe.analysis.features import FeatureSettings, ModelRequest, model_features
from cka_probe.data import load_probe_set


def _compare(cache, **kw):
    return compare("test_resnet", "test_vit", "embedded", n=8, weights="random", progress=False, device="cpu",
                   cache=cache, **kw)


def test_second_compare_reuses_both_models_features(tmp_path, monkeypatch):
    first = _compare(tmp_path)
    assert first.metadata["seconds"]["features_from_cache"] == {"a": False, "b": False}
    assert len(list(tmp_path.glob("*.safetensors"))) == 2 and len(list(tmp_path.glob("*.json"))) == 2

    import cka_probe.analysis.features as features_module

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
    assert len(list(tmp_path.glob("*.safetensors"))) == 2
