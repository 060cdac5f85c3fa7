"""Pretrained weights: from the local Hugging Face cache, and a fast, clear error when they cannot be had."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch
from huggingface_hub.errors import LocalEntryNotFoundError

from cka_probe.errors import WeightsUnavailableError
from cka_probe.models import load_model, pretrained_record


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache in tmp_path, with the hub in offline mode; returns the cache folder."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def _cache_weights(cache: Path, repo_id: str, state_dict: dict[str, torch.Tensor]) -> Path:
    """Lay out a hub cache entry the way huggingface_hub writes one (refs/main -> snapshots/<commit>/file)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    snapshot = repo / "snapshots" / commit
    snapshot.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    safetensors.torch.save_file(state_dict, str(snapshot / "model.safetensors"))
    return snapshot / "model.safetensors"


def _forbid_timm_create(monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("timm.create_model must not be reached: it would retry the hub for a minute")

    monkeypatch.setattr(timm, "create_model", refuse)


def test_offline_without_cached_weights_is_an_error_before_any_request_naming_the_alternatives(hub, monkeypatch):
    _forbid_timm_create(monkeypatch)
    requests = []
    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", lambda url, **kwargs: requests.append(url))
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("test_resnet")
    assert requests == []  # offline: not one request, so no retries to wait for
    message = str(info.value)
    assert "\n" not in message
    assert "offline" in message and str(hub) in message and "timm/test_resnet.r160_in1k" in message
    for alternative in ("--weights random", "--checkpoint-a", "HF_HOME"):
        assert alternative in message


def test_hub_offline_and_empty_hf_home_from_the_environment_fail_fast(tmp_path):
    """End to end in a fresh interpreter, where huggingface_hub reads HF_HUB_OFFLINE and HF_HOME at import."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    env.pop("HF_HUB_CACHE", None)
    code = (
        "from cka_probe.models import load_model\n"
        "from cka_probe.errors import WeightsUnavailableError\n"
        "try:\n    load_model('vit_s')\n"
        "except WeightsUnavailableError as exc:\n    print('ERROR', exc)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("ERROR pretrained weights for vit_small_patch16_224")
    assert "offline mode" in done.stdout and str(tmp_path / "hf") in done.stdout


def test_unreachable_hub_without_cached_weights_fails_after_one_request(hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    requests = []

    def unreachable(url, **kwargs):
        requests.append(url)
        raise ConnectionError("[Errno -2] Name or service not known")

    monkeypatch.setattr(huggingface_hub, "get_hf_file_metadata", unreachable)
    _forbid_timm_create(monkeypatch)
    with pytest.raises(WeightsUnavailableError, match=r"cannot be reached \(ConnectionError: \[Errno -2\]"):
        load_model("test_vit")
    assert len(requests) == 1 and "test_vit.r160_in1k" in requests[0]


def test_cached_weights_load_offline_and_are_the_cached_ones(hub):
    torch.manual_seed(11)
    published = timm.create_model("test_vit").state_dict()
    _cache_weights(hub, "timm/test_vit.r160_in1k", published)
    loaded = load_model("test_vit")
    assert loaded.weights == "pretrained"
    assert loaded.pretrained_tag == "test_vit.r160_in1k"
    state = loaded.model.state_dict()
    assert all(torch.equal(state[k], published[k]) for k in published)
    assert not torch.equal(state["pos_embed"], load_model("test_vit", weights="random").model.state_dict()["pos_embed"])


def test_a_model_without_published_weights_is_an_error_not_random_weights(hub):
    assert timm.models.get_pretrained_cfg("test_vit4").hf_hub_id is None
    with pytest.raises(WeightsUnavailableError, match="timm publishes no pretrained weights for test_vit4"):
        load_model("test_vit4")


def test_a_hub_error_while_timm_loads_becomes_weights_unavailable(hub, monkeypatch):
    torch.manual_seed(0)
    _cache_weights(hub, "timm/test_vit.r160_in1k", timm.create_model("test_vit").state_dict())

    def vanished(*args, **kwargs):
        raise LocalEntryNotFoundError("file vanished from the cache")

    monkeypatch.setattr(timm, "create_model", vanished)
    with pytest.raises(WeightsUnavailableError, match=r"could not be loaded \(file vanished from the cache\)"):
        load_model("test_vit")


def test_a_resized_classifier_on_pretrained_weights_is_seeded(hub):
    torch.manual_seed(11)
    published = timm.create_model("test_vit").state_dict()
    _cache_weights(hub, "timm/test_vit.r160_in1k", published)
    first, again = (load_model("test_vit", num_classes=10, seed=3).model for _ in range(2))
    assert first.head.out_features == 10
    assert torch.equal(first.head.weight, again.head.weight)
    assert torch.equal(first.pos_embed, published["pos_embed"])


# --------------------------------------------------------------------------- the pretrained part of the cache key


def test_pretrained_record_is_timms_resolved_tag_and_the_cached_files_hash(hub):
    assert pretrained_record("test_vit") == {
        "tag": "test_vit.r160_in1k",
        "source": "hf-hub:timm/test_vit.r160_in1k",
        "sha256": None,
    }  # not cached: nothing downloaded to hash it
    torch.manual_seed(11)
    weights = _cache_weights(hub, "timm/test_vit.r160_in1k", timm.create_model("test_vit").state_dict())
    record = pretrained_record("test_vit")
    assert record["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
    assert record["tag"] == load_model("test_vit").pretrained_tag  # the tag of the weights timm loads
    assert pretrained_record("test_vit4") == {"tag": "test_vit4.r160_in1k", "source": None, "sha256": None}


def test_replaced_pretrained_weights_are_a_new_cache_key(hub, tmp_path):
    from cka_probe.data import load_probe_set
    from cka_probe.engine.cache import FeatureCache
    from cka_probe.engine.features import FeatureSettings, ModelRequest, model_features

    probe, cache = load_probe_set("embedded", n=8), FeatureCache(tmp_path / "cache")
    torch.manual_seed(11)
    weights = _cache_weights(hub, "timm/test_vit.r160_in1k", timm.create_model("test_vit").state_dict())
    first = model_features(ModelRequest("test_vit"), probe, FeatureSettings(), cache=cache, progress=False)
    assert (
        model_features(ModelRequest("test_vit"), probe, FeatureSettings(), cache=cache, progress=False).extra["cached"]
        is True
    )
    torch.manual_seed(12)
    safetensors.torch.save_file(timm.create_model("test_vit").state_dict(), str(weights))  # an updated hub file
    again = model_features(ModelRequest("test_vit"), probe, FeatureSettings(), cache=cache, progress=False)
    assert again.extra["cached"] is False
    assert not all(torch.equal(first.features[k], again.features[k]) for k in first.features)
