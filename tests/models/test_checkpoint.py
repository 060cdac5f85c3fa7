"""Checkpoints: formats, wrappers, DDP prefixes, hashes, missing and unexpected keys, wrong architectures."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass

import pytest
import safetensors.torch
import timm
import torch

from cka_probe.errors import CheckpointError, CheckpointMismatchError
from cka_probe.models import CheckpointKeysWarning, load_model


@dataclass
class TrainingConfig:
    """An arbitrary Python object that weights_only loading must refuse."""

    lr: float = 0.1


@pytest.fixture(scope="module")
def source_state():
    """The weights a checkpoint holds: test_vit with a seed unlike load_model's default."""
    torch.manual_seed(42)
    return timm.create_model("test_vit").state_dict()


def _equal_to(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> bool:
    current = model.state_dict()
    return all(torch.equal(current[k], v) for k, v in state.items())


def _prefixed(state, prefix="module."):
    return {prefix + k: v for k, v in state.items()}


@pytest.mark.parametrize(
    ("filename", "wrap", "key"),
    [
        ("raw.pth", lambda sd: sd, ""),
        ("raw.pt", lambda sd: sd, ""),
        ("wrapped.pth", lambda sd: {"state_dict": sd, "epoch": 3}, "state_dict"),
        ("deit_style.pth", lambda sd: {"model": sd, "optimizer": {"lr": 0.1}}, "model"),
        ("ddp.pth", lambda sd: {"state_dict": _prefixed(sd)}, "state_dict"),
        ("timm_train.pth.tar", lambda sd: {"state_dict": sd, "args": argparse.Namespace(lr=0.1)}, "state_dict"),
        ("ema_only.pth", lambda sd: {"state_dict_ema": sd, "epoch": 300}, "state_dict_ema"),
        ("model_ema.pth", lambda sd: {"model_ema": _prefixed(sd)}, "model_ema"),
    ],
)
def test_torch_checkpoints_load_in_every_common_wrapping(tmp_path, source_state, filename, wrap, key):
    path = tmp_path / filename
    torch.save(wrap(source_state), path)
    loaded = load_model("test_vit", checkpoint=path)
    assert _equal_to(loaded.model, source_state)
    assert loaded.weights == "checkpoint"
    assert loaded.checkpoint_key == key
    assert loaded.checkpoint_path == str(path.resolve())
    assert loaded.checkpoint_sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.missing_keys == () and loaded.unexpected_keys == ()
    assert not loaded.model.training


def test_safetensors_checkpoint_loads_with_ddp_prefix(tmp_path, source_state):
    path = tmp_path / "weights.safetensors"
    safetensors.torch.save_file(_prefixed(source_state), str(path))
    loaded = load_model("test_vit", checkpoint=path, weights="random")
    assert _equal_to(loaded.model, source_state)
    assert loaded.provenance()["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.provenance()["weights"] == "checkpoint"


def test_plain_weights_win_over_ema_weights(tmp_path, source_state):
    ema = {k: v + 1 if v.is_floating_point() else v for k, v in source_state.items()}
    path = tmp_path / "both.pth"
    torch.save({"state_dict_ema": ema, "state_dict": source_state}, path)
    loaded = load_model("test_vit", checkpoint=path)
    assert loaded.checkpoint_key == "state_dict"
    assert _equal_to(loaded.model, source_state)


def test_missing_and_unexpected_keys_are_reported_and_missing_ones_keep_the_seeded_init(tmp_path, source_state):
    partial = {k: v for k, v in source_state.items() if not k.startswith("head.")}
    partial["aux_head.weight"] = torch.zeros(3, 3)
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.warns(CheckpointKeysWarning, match=r"2 missing key\(s\).*1 unexpected key\(s\)"):
        loaded = load_model("test_vit", checkpoint=path, seed=5)
    assert set(loaded.missing_keys) == {"head.weight", "head.bias"}
    assert loaded.unexpected_keys == ("aux_head.weight",)
    assert loaded.provenance()["missing_keys"] == list(loaded.missing_keys)
    seeded = load_model("test_vit", weights="random", seed=5).model
    assert torch.equal(loaded.model.head.weight, seeded.head.weight)
    assert torch.equal(loaded.model.pos_embed, source_state["pos_embed"])


def test_checkpoint_of_another_architecture_with_no_common_key_is_refused(tmp_path):
    path = tmp_path / "resnet.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), path)
    with pytest.raises(CheckpointMismatchError, match="shares no parameter name with test_vit") as info:
        load_model("test_vit", checkpoint=path)
    assert "\n" not in str(info.value)


def test_checkpoint_with_other_shapes_is_refused_naming_a_tensor(tmp_path):
    path = tmp_path / "wide.safetensors"
    safetensors.torch.save_file(timm.create_model("test_vit", embed_dim=48).state_dict(), str(path))
    expected = r"\d+ tensor\(s\) differ in shape, e\.g\. cls_token \(1, 1, 48\) in the checkpoint vs \(1, 1, 64\)"
    with pytest.raises(CheckpointMismatchError, match=expected) as info:
        load_model("test_vit", checkpoint=path)
    assert "pass the model name it was saved from" in str(info.value)


def test_classifier_only_mismatch_suggests_num_classes(tmp_path):
    torch.manual_seed(1)
    state = timm.create_model("test_vit", num_classes=100).state_dict()
    path = tmp_path / "cifar100.pth"
    torch.save({"model": state}, path)
    with pytest.raises(CheckpointMismatchError, match="only the classifier differs: pass num_classes=100"):
        load_model("test_vit", checkpoint=path)
    loaded = load_model("test_vit", checkpoint=path, num_classes=100)
    assert _equal_to(loaded.model, state)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("missing.pth", None, "does not exist"),
        ("weights.ckpt", b"", "unsupported type"),
        ("corrupt.pth", b"not a zip archive at all", "cannot read checkpoint"),
        ("corrupt.safetensors", b"\x00\x01garbage", "cannot read safetensors checkpoint"),
    ],
)
def test_unreadable_checkpoints_are_one_line_errors(tmp_path, filename, content, message):
    path = tmp_path / filename
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model("test_vit", checkpoint=path)
    assert "\n" not in str(info.value) and filename in str(info.value)


def test_checkpoint_holding_python_objects_is_refused_with_the_fix(tmp_path, source_state):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": source_state, "config": TrainingConfig()}, path)
    with pytest.raises(CheckpointError, match=r"refuses \([\w.]*TrainingConfig\); re-save just its weights") as info:
        load_model("test_vit", checkpoint=path)
    assert "torch.save(model.state_dict(), PATH)" in str(info.value)


def test_checkpoint_without_a_state_dict_is_refused(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "metric": 0.5}, path)
    with pytest.raises(CheckpointError, match=r"holds no state dict \(found: epoch, metric\)"):
        load_model("test_vit", checkpoint=path)


def test_checkpoint_loads_into_a_module_passed_in(tmp_path, source_state):
    path = tmp_path / "raw.pth"
    torch.save(source_state, path)
    module = timm.create_model("test_vit")
    loaded = load_model(module, checkpoint=path)
    assert loaded.weights == "checkpoint" and _equal_to(module, source_state)
