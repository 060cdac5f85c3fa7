"""Checkpoints: formats, wrappers, DDP prefixes, hashes, missing and unexpected keys, wrong architectures."""

from __future__ import annotations

import argparse
import hashlib
from dataclasses import dataclass
from pathlib import Path

import pytest
import safetensors.torch
import timm
import torch

from cka_probe.errors import (
    CheckpointError,
    CheckpointMismatchError,
    UnsafeCheckpointError,
)
from cka_probe.models import (
    CheckpointKeysWarning,
    checkpoint_model_name,
    load_checkpoint,
    load_model,
    model_from_checkpoint,
    read_checkpoint,
)

DATA = Path(__file__).parent / "data"


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
        (
            "timm_train.pth.tar",
            lambda sd: {"state_dict": sd, "args": argparse.Namespace(lr=0.1)},
            "state_dict",
        ),
        (
            "ema_only.pth",
            lambda sd: {"state_dict_ema": sd, "epoch": 300},
            "state_dict_ema",
        ),
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


def test_classifier_size_is_read_from_the_checkpoint_and_a_contrary_one_is_refused(
    tmp_path,
):
    torch.manual_seed(1)
    state = timm.create_model("test_vit", num_classes=100).state_dict()
    path = tmp_path / "cifar100.pth"
    torch.save({"model": state}, path)
    loaded = load_model("test_vit", checkpoint=path)
    assert loaded.model.num_classes == 100 and _equal_to(loaded.model, state)
    assert load_model("test_vit", checkpoint=path, num_classes=100).model.num_classes == 100
    with pytest.raises(
        CheckpointMismatchError,
        match="only the classifier differs: the checkpoint has 100 classes",
    ):
        load_model("test_vit", checkpoint=path, num_classes=10)


@pytest.mark.parametrize(
    ("filename", "content", "message"),
    [
        ("missing.pth", None, "does not exist"),
        ("weights.ckpt", b"", "unsupported type"),
        ("corrupt.pth", b"not a zip archive at all", "cannot read checkpoint"),
        ("short.pth", b"junk", "cannot read checkpoint"),  # too short for the legacy header (struct.error)
        ("zip-header.pth", b"PK\x03\x04" + bytes(100), "cannot read checkpoint"),
        ("truncated.pth", "truncated", "cannot read checkpoint"),  # half of a torch.save file (OSError)
        (
            "corrupt.safetensors",
            b"\x00\x01garbage",
            "cannot read safetensors checkpoint",
        ),
    ],
)
def test_unreadable_checkpoints_are_one_line_errors(tmp_path, filename, content, message):
    path = tmp_path / filename
    if content == "truncated":
        torch.save({"w": torch.randn(100, 100)}, path)
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    elif content is not None:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match=message) as info:
        load_model("test_vit", checkpoint=path)
    assert "\n" not in str(info.value) and filename in str(info.value)


def test_checkpoint_holding_python_objects_is_refused_with_the_fix(tmp_path, source_state):
    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": source_state, "config": TrainingConfig()}, path)
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"pickles [\w.]*TrainingConfig, outside the allowlist",
    ) as info:
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


class _RunsOnUnpickle:
    """An object whose unpickling would create a file: proof that a refused file is never unpickled."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_global_outside_the_allowlist_is_named_and_never_run(tmp_path, source_state):
    marker = tmp_path / "ran"
    path = tmp_path / "evil.pth"
    torch.save({"state_dict": source_state, "hook": _RunsOnUnpickle(marker)}, path)
    with pytest.raises(
        UnsafeCheckpointError,
        match=r"pickles builtins\.getattr, pathlib\.Path, pathlib\.PosixPath, outside the allowlist",
    ) as info:
        read_checkpoint(path)
    assert "argparse.Namespace" in str(info.value) and "\n" not in str(info.value)
    assert not marker.exists()


def _official_args(model: str) -> argparse.Namespace:
    """Arguments as the official OFA-KD train.py parses them (a subset of its argparse options, with its types)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="resnet18")
    parser.add_argument("--teacher", default="deit_base_patch16_224")
    parser.add_argument("--distiller", default="ofa")
    parser.add_argument("--ofa-eps", type=float, nargs="+", default=[1.5])
    parser.add_argument("--ofa-stage", type=int, nargs="+", default=[1, 2, 3, 4])
    parser.add_argument("--aa", default="rand-m9-mstd0.5-inc1")
    parser.add_argument("--mean", type=float, nargs="+", default=None)
    parser.add_argument("--crop-pct", type=float, default=None)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--amp", action="store_true")
    return parser.parse_args(["--model", model])


@pytest.fixture
def official_checkpoint(tmp_path):
    """A checkpoint written by timm's CheckpointSaver, as the official train.py calls it (args, EMA, AMP scaler)."""
    from timm.utils import CheckpointSaver, ModelEmaV3, NativeScaler

    torch.manual_seed(7)
    model = timm.create_model("test_resnet", num_classes=100)
    ema = ModelEmaV3(model, decay=0.9)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # the EMA now differs from the model
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    saver = CheckpointSaver(
        model, optimizer, args=_official_args("test_resnet"), model_ema=ema, amp_scaler=NativeScaler(),
        checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path), decreasing=False,
    )  # fmt: skip
    saver.save_checkpoint(epoch=0, metric=12.5)
    path = tmp_path / "model_best.pth.tar"
    assert path.is_file()
    return path, model.state_dict(), ema.module.state_dict()


def test_official_train_checkpoints_load_student_or_ema_with_their_classes(
    official_checkpoint,
):
    path, student, ema = official_checkpoint
    raw = read_checkpoint(path)
    assert isinstance(raw["args"], argparse.Namespace) and raw["args"].ofa_eps == [1.5] and raw["arch"] == "test_resnet"
    assert checkpoint_model_name(path) == "test_resnet"
    loaded = load_model("test_resnet", checkpoint=path)
    assert loaded.checkpoint_key == "state_dict" and loaded.model.num_classes == 100
    assert _equal_to(loaded.model, student)
    loaded_ema = load_model("test_resnet", checkpoint=path, checkpoint_select="ema")
    assert loaded_ema.checkpoint_key == "state_dict_ema" and _equal_to(loaded_ema.model, ema)
    assert not _equal_to(loaded_ema.model, student)
    by_path = load_model(str(path))  # the checkpoint records its model
    assert by_path.timm_name == "test_resnet" and _equal_to(by_path.model, student)


def test_official_checkpoint_of_another_architecture_is_refused(official_checkpoint):
    path, _, _ = official_checkpoint
    with pytest.raises(
        CheckpointMismatchError,
        match=r"was trained as test_resnet, not test_vit; pass test_resnet",
    ) as info:
        load_model("test_vit", checkpoint=path)
    assert "\n" not in str(info.value)


def test_ema_selection_without_ema_weights_is_refused(tmp_path, source_state):
    path = tmp_path / "plain.pth"
    torch.save({"state_dict": source_state}, path)
    with pytest.raises(CheckpointError, match=r"holds no EMA weights \(found: state_dict\)"):
        load_model("test_vit", checkpoint=path, checkpoint_select="ema")


def test_old_timm_swin_checkpoints_are_converted_by_timms_filter():
    # Written by timm 0.6.13 (tests/models/data/make_swin_timm06.py): the old patch-merging layout and head.
    # Reference: the logits timm 0.6 computed with those weights on fixed images.
    reference = torch.load(DATA / "swin_timm06_tiny_logits.pt", weights_only=True)
    assert reference["timm"].startswith("0.6")
    raw = read_checkpoint(DATA / "swin_timm06_tiny.pth")["model"]
    assert "layers.0.downsample.reduction.weight" in raw and "head.weight" in raw  # the old layout
    model = timm.create_model(
        "swin_tiny_patch4_window7_224", num_classes=10, img_size=32, window_size=2, embed_dim=8,
        depths=(1, 1, 1, 1), num_heads=(1, 1, 1, 1),
    ).eval()  # fmt: skip
    assert not set(raw) <= set(model.state_dict())
    load_checkpoint(model, DATA / "swin_timm06_tiny.pth", "swin", strict=True)
    with torch.no_grad():
        assert torch.allclose(model(reference["images"]), reference["logits"], atol=1e-5)


def test_a_module_built_from_a_file_keeps_the_file_in_its_provenance(
    official_checkpoint,
):
    path, _, ema = official_checkpoint
    module = model_from_checkpoint(path, checkpoint_select="ema")
    assert module.num_classes == 100 and _equal_to(module, ema)
    loaded = load_model(module)
    record = loaded.provenance()
    assert record["weights"] == "checkpoint" and record["checkpoint_key"] == "state_dict_ema"
    assert record["checkpoint_path"] == str(path.resolve())
    assert record["checkpoint_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_recorded_alias_matches_the_model_it_stands_for(tmp_path):
    from cka_probe.models._checkpoint import TRAINING_CHECKPOINT_FORMAT

    torch.manual_seed(3)
    state = timm.create_model("deit_tiny_patch16_224", num_classes=10).state_dict()
    path = tmp_path / "run.pth"
    torch.save({"format": TRAINING_CHECKPOINT_FORMAT, "model": "deit_t", "student": state}, path)
    for name in ("deit_tiny_patch16_224", "deit_t"):
        loaded = load_model(name, checkpoint=path)
        assert loaded.model.num_classes == 10 and _equal_to(loaded.model, state)
    with pytest.raises(CheckpointMismatchError, match="was trained as deit_t, not deit_small_patch16_224"):
        load_model("deit_s", checkpoint=path)


def test_an_official_run_is_read_with_the_transform_it_evaluated_with(tmp_path):
    """Every reader of an official OFA-KD train.py checkpoint (compare, figure, zoo, identify, validate) takes the
    preprocessing its run evaluated with: ResNet-18 as timm 0.6.5 resolved it (crop 0.875, bilinear; the
    installed timm says 0.95, bicubic); a file of timm's own train.py (no --distiller) keeps the model's."""
    from cka_probe.models import load_model

    torch.manual_seed(0)
    state = timm.create_model("resnet18", num_classes=10).state_dict()
    official, plain = tmp_path / "official.pth.tar", tmp_path / "timm.pth.tar"
    torch.save({"epoch": 4, "arch": "resnet18", "state_dict": state, "args": _official_args("resnet18")}, official)
    timm_args = argparse.Namespace(**{k: v for k, v in vars(_official_args("resnet18")).items() if k != "distiller"})
    torch.save({"epoch": 4, "arch": "resnet18", "state_dict": state, "args": timm_args}, plain)
    loaded = load_model("resnet18", weights="random", checkpoint=official)
    assert loaded.data_config_source == "official run" and loaded.epoch == 4
    assert (loaded.data_config["crop_pct"], loaded.data_config["interpolation"]) == (0.875, "bilinear")
    other = load_model("resnet18", weights="random", checkpoint=plain)
    assert other.data_config_source == "model" and other.data_config["crop_pct"] == 0.95
