"""A ``cka-probe train`` run is rebuilt as it trained: its ``student_kwargs`` and its own evaluation transform.

References: the student a run trains is ``timm.create_model(student, num_classes=..., **student_kwargs)``
(the run's config, ``tests/tiny_runs.py``); its evaluation transform is the one its validation uses,
``cka_probe.ofa.data.build_transforms(config)[1]``; Fashion-MNIST's mean and std are 0.2860 and 0.3530.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image

from cka_probe.errors import ArgumentError, CheckpointError, CheckpointMismatchError
from cka_probe.models import (
    checkpoint_label,
    checkpoint_num_classes,
    load_model,
    model_from_checkpoint,
    read_checkpoint,
    transform_for,
)
from tests.tiny_runs import (
    FASHION_MNIST_MEAN,
    FASHION_MNIST_STD,
    IMG_SIZE,
    STUDENT,
    STUDENT_KWARGS,
    train_tiny_run,
    write_fashion_mnist,
)

DATA = Path(__file__).parent / "data"

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    torch.set_num_threads(1)
    return train_tiny_run(root, seed=0, data_dir=write_fashion_mnist(root / "fmnist"))


def _student_reference(path: Path) -> torch.nn.Module:
    """The student as the run built it, with the run's weights."""
    model = timm.create_model(STUDENT, num_classes=10, **STUDENT_KWARGS)
    model.load_state_dict(read_checkpoint(path)["student"])
    return model.eval()


def test_a_run_is_rebuilt_with_its_student_kwargs_and_its_own_transform(run_dir):
    path = run_dir / "best.pth"
    loaded = load_model(str(path))  # no name, no kwargs, no size: all from the run
    reference = _student_reference(path)
    assert loaded.model.patch_embed.patch_size == (4, 4) and len(loaded.model.blocks) == 2
    assert loaded.model.embed_dim == 32 and loaded.model.num_classes == 10
    images = torch.randn(2, 3, IMG_SIZE, IMG_SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), reference(images))
    config = loaded.data_config
    assert config["input_size"] == (3, IMG_SIZE, IMG_SIZE)
    assert config["mean"] == pytest.approx(FASHION_MNIST_MEAN) and config["std"] == pytest.approx(FASHION_MNIST_STD)
    record = loaded.provenance()
    assert record["data_config_source"] == "run" and record["epoch"] == 1
    assert record["data_config"]["input_size"] == [3, IMG_SIZE, IMG_SIZE]
    assert record["model_kwargs"] == STUDENT_KWARGS


def test_the_transform_is_the_one_the_runs_validation_used(run_dir):
    from cka_probe.ofa import TrainConfig
    from cka_probe.ofa.data import build_transforms

    path = run_dir / "last.pth"
    run_transform = build_transforms(TrainConfig.from_dict(read_checkpoint(path)["config"]))[1]
    ours = transform_for(load_model(str(path)))
    image = Image.fromarray(torch.randint(0, 256, (28, 28), generator=torch.Generator().manual_seed(1)).byte().numpy())
    image = image.convert("RGB")
    assert torch.equal(ours(image), run_transform(image))
    grey = ours(Image.new("RGB", (28, 28), (128, 128, 128)))
    assert grey.shape == (3, IMG_SIZE, IMG_SIZE)
    assert torch.allclose(grey, torch.full_like(grey, (128 / 255 - 0.2860) / 0.3530), atol=1e-6)


def test_the_same_run_named_with_its_file_as_checkpoint(run_dir):
    path = run_dir / "best.pth"
    loaded = load_model(STUDENT, checkpoint=path)
    assert loaded.data_config["input_size"] == (3, IMG_SIZE, IMG_SIZE) and len(loaded.model.blocks) == 2
    module = model_from_checkpoint(path)  # what validate builds
    assert len(module.blocks) == 2 and module.patch_embed.patch_size == (4, 4)
    given = load_model(module)
    assert given.data_config_source == "run" and given.data_config["input_size"] == (3, IMG_SIZE, IMG_SIZE)


def test_a_user_input_size_replaces_only_the_size(run_dir):
    loaded = load_model(str(run_dir / "best.pth"), img_size=48)
    assert loaded.data_config["input_size"] == (3, 48, 48)
    assert loaded.data_config["mean"] == pytest.approx(FASHION_MNIST_MEAN)
    assert loaded.data_config_source == "user img_size over run"
    named = load_model("test_resnet", weights="random", img_size=40)
    assert named.data_config["input_size"] == (3, 40, 40)
    assert named.data_config_source == "user img_size over model"
    assert load_model("test_resnet", weights="random").data_config_source == "model"
    with pytest.raises(ArgumentError, match=r"img_size must be a positive number of pixels, got 0 \(--img-size-a/-b"):
        load_model("test_resnet", weights="random", img_size=0)


def test_a_run_checkpoint_in_another_architecture_is_refused_before_its_kwargs(run_dir):
    with pytest.raises(CheckpointMismatchError, match=f"was trained as {STUDENT}, not resnet18; pass {STUDENT}"):
        load_model("resnet18", checkpoint=run_dir / "best.pth")
    with pytest.raises(CheckpointMismatchError, match=f"was trained as {STUDENT}, not resnet18"):
        model_from_checkpoint(run_dir / "best.pth", name="resnet18")


def _edited(run_dir: Path, tmp_path: Path, edit, recorded: bool = False) -> Path:
    """The run's last.pth with its config edited; without the data config it recorded unless ``recorded``."""
    state = read_checkpoint(run_dir / "last.pth")
    if not recorded:
        state.pop("eval_transform", None)
    edit(state if recorded else state["config"])
    path = tmp_path / "edited.pth"
    torch.save(state, path)
    return path


def test_the_data_config_a_run_recorded_is_the_one_used(run_dir, tmp_path):
    recorded = read_checkpoint(run_dir / "last.pth")["eval_transform"]
    assert recorded["input_size"] == [3, IMG_SIZE, IMG_SIZE]
    changed = _edited(run_dir, tmp_path, lambda c: c["eval_transform"].update(crop_pct=0.5, mean=[0.1] * 3), True)
    config = load_model(str(changed)).data_config
    assert config["crop_pct"] == 0.5 and config["mean"] == (0.1, 0.1, 0.1) and config["input_size"] == (3, 32, 32)
    unrecorded = load_model(str(_edited(run_dir, tmp_path, lambda c: None))).data_config  # rebuilt from its recipe
    assert unrecorded["crop_pct"] == 1.0 and unrecorded["mean"] == pytest.approx(FASHION_MNIST_MEAN)


def test_run_configs_that_cannot_be_rebuilt(run_dir, tmp_path):
    unknown = _edited(run_dir, tmp_path, lambda c: c["student_kwargs"].update(bogus_width=3))
    with pytest.raises(CheckpointError, match=r"records student_kwargs \[.*'bogus_width'.*\] that timm .* does not"):
        load_model(str(unknown))
    no_size = _edited(run_dir, tmp_path, lambda c: c.pop("img_size"))
    with pytest.raises(CheckpointError, match="records a run config without img_size, so its evaluation transform"):
        load_model(str(no_size))
    not_mapping = _edited(run_dir, tmp_path, lambda c: c.update(student_kwargs=[1, 2]))
    with pytest.raises(CheckpointError, match="records student_kwargs as a list, not a mapping"):
        load_model(str(not_mapping))


def test_checkpoint_labels_tell_runs_apart():
    assert checkpoint_label("/x/runs/seed0/best.pth", epoch=7) == "seed0/best.pth (epoch 7)"
    assert checkpoint_label("/x/runs/seed1/best.pth", epoch=3, ema=True) == "seed1/best.pth (EMA, epoch 3)"
    assert checkpoint_label("/x/a/seed0/best.pth", parts=3) == "a/seed0/best.pth"
    assert not re.search(r"^/", checkpoint_label("/best.pth", parts=5))


# --------------------------------------------------------------------------- Swin checkpoints of timm 0.6


def test_old_layout_swin_class_count_is_read_from_head_weight():
    # Written by timm 0.6.13 (tests/models/data/make_swin_timm06.py) with 10 classes under "head.weight".
    raw = read_checkpoint(DATA / "swin_timm06_tiny.pth")["model"]
    assert "head.weight" in raw and "head.fc.weight" not in raw
    assert checkpoint_num_classes(raw, "swin_tiny_patch4_window7_224") == 10


def _old_swin_layout(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm 0.6 / Microsoft's layout: downsampling at the end of a stage (stage i+1's is stage i's), ``head.*``."""
    out = {}
    for key, value in state.items():
        key = re.sub(r"layers\.(\d+)\.downsample", lambda m: f"layers.{int(m.group(1)) - 1}.downsample", key)
        out[key.replace("head.fc.", "head.")] = value
    return out


def test_an_old_layout_swin_with_10_classes_loads_without_num_classes(tmp_path):
    torch.manual_seed(5)
    source = timm.create_model("swin_pico_patch4_window7_224", num_classes=10).eval()
    path = tmp_path / "swin_old.pth"
    torch.save({"model": _old_swin_layout(source.state_dict())}, path)
    loaded = load_model("swin_pico_patch4_window7_224", checkpoint=path)
    assert loaded.model.num_classes == 10
    images = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert torch.allclose(loaded.model(images), source(images), atol=1e-5)
    with pytest.raises(CheckpointMismatchError, match="the checkpoint has 10 classes; leave --num-classes out or set"):
        load_model("swin_pico_patch4_window7_224", checkpoint=path, num_classes=1000)
