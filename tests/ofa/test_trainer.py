"""The training loop: checkpoints, exact resume, metrics log, and its one-line errors."""

from __future__ import annotations

import json

import pytest
import torch

from cka_probe.errors import CheckpointError, ConfigError, DataNotFoundError, OutputExistsError
from cka_probe.models import read_checkpoint
from cka_probe.ofa.config import load_config
from cka_probe.ofa.trainer import Trainer, train

STUDENT = {"student": "vit_tiny_patch16_224", "student_kwargs": {
    "img_size": 16, "patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 2, "drop_path_rate": 0.1,
}}  # fmt: skip


@pytest.fixture
def teacher_checkpoint(tmp_path, model_factory):
    path = tmp_path / "teacher.pth"
    torch.save(model_factory("resnet", seed=5).state_dict(), path)
    return path


def _config(tmp_path, teacher_weights, **changes):
    values = {
        "method": "ofa", **STUDENT, "teacher": "test_resnet", "teacher_checkpoint": str(teacher_weights),
        "num_classes": 10, "img_size": 16, "dataset": "fashion_mnist", "epochs": 3, "batch_size": 8,
        "lr": 1e-3, "warmup_epochs": 1, "ema_decay": 0.9, "mixup": 0.8, "cutmix": 1.0, "smoothing": 0.1,
        "workers": 0, "output_dir": str(tmp_path / "run"), "device": "cpu", "ofa_gamma": 1.5,
    }  # fmt: skip
    values.update(changes)
    return load_config(None, values)


def _student_state(trainer):
    return {k: v.clone() for k, v in trainer.task.student.state_dict().items()}


def test_resume_continues_exactly_like_an_uninterrupted_run(tmp_path, teacher_checkpoint, make_datasets):
    uninterrupted = Trainer(_config(tmp_path / "a", teacher_checkpoint), datasets=make_datasets())
    full = uninterrupted.fit()

    paused_config = _config(tmp_path / "b", teacher_checkpoint)
    Trainer(paused_config, datasets=make_datasets()).fit(stop_after=1)
    resumed = Trainer(paused_config, datasets=make_datasets())
    rest = resumed.fit(resume="last")

    assert [r["epoch"] for r in rest.history] == [2, 3]
    for a, b in zip(full.history[1:], rest.history):
        assert a["train"] == pytest.approx(b["train"], rel=1e-6, abs=1e-7)
        assert a["val"] == pytest.approx(b["val"], rel=1e-6, abs=1e-7)
        assert a["lr"] == pytest.approx(b["lr"])
    a_state, b_state = _student_state(uninterrupted), _student_state(resumed)
    assert all(torch.equal(a_state[k], b_state[k]) for k in a_state)  # bitwise on one CPU thread
    a_ema, b_ema = uninterrupted.ema.module.state_dict(), resumed.ema.module.state_dict()
    assert all(torch.allclose(a_ema[k], b_ema[k], rtol=1e-6, atol=1e-7) for k in a_ema)
    log = [json.loads(line) for line in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]
    assert {"top1", "top5", "loss"} <= set(log[-1]["val"]) and "val_ema" in log[-1]


def test_checkpoint_holds_only_tensors_and_plain_types(tmp_path, teacher_checkpoint, make_datasets):
    result = train(_config(tmp_path, teacher_checkpoint, epochs=1), datasets=make_datasets())
    state = read_checkpoint(result.checkpoint)  # torch.load(weights_only=True) inside
    assert state["epoch"] == 1 and state["config"]["method"] == "ofa"
    assert set(state["branches"]) and state["model"] == STUDENT["student"] and state["num_classes"] == 10
    assert not list(result.checkpoint.parent.glob(".*.tmp"))  # the atomic write left no temporary file
    # a training checkpoint can serve as the next run's teacher (its "student" entry is loaded)
    as_teacher = _config(tmp_path / "next", result.checkpoint, teacher=STUDENT["student"],
                         teacher_kwargs=STUDENT["student_kwargs"], method="kd", epochs=1)  # fmt: skip
    Trainer(as_teacher, datasets=make_datasets())


def test_checkpoint_of_another_model_is_refused(tmp_path, teacher_checkpoint, make_datasets):
    config = _config(tmp_path, teacher_checkpoint, epochs=2)
    Trainer(config, datasets=make_datasets()).fit(stop_after=1)
    other = config.replace(student="test_vit", student_kwargs={"img_size": 16})
    with pytest.raises(CheckpointError, match="was written with student='vit_tiny_patch16_224'"):
        Trainer(other, datasets=make_datasets()).fit(resume="last")
    # a teacher checkpoint of the wrong architecture
    wrong = config.replace(teacher="test_convnext", output_dir=str(tmp_path / "other"))
    with pytest.raises(CheckpointError, match=r"shares no parameter name with test_convnext"):
        Trainer(wrong, datasets=make_datasets())
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(config.replace(teacher_checkpoint=str(tmp_path / "nope.pth")), datasets=make_datasets())
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Trainer(config.replace(teacher_checkpoint=str(tmp_path / "garbage.pth")), datasets=make_datasets())


def test_existing_output_needs_resume_or_overwrite(tmp_path, teacher_checkpoint, make_datasets):
    config = _config(tmp_path, teacher_checkpoint, epochs=1, method="scratch")
    train(config, datasets=make_datasets())
    with pytest.raises(OutputExistsError, match="already holds a run"):
        train(config, datasets=make_datasets())
    result = train(config, datasets=make_datasets(), overwrite=True)
    assert len((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()) == 1
    assert result.final["epoch"] == 1


def test_missing_teacher_weights_and_unknown_model(tmp_path, teacher_checkpoint, make_datasets):
    message = r"needs a trained teacher: --set teacher_checkpoint=PATH \(or --set teacher_pretrained=true\)"
    with pytest.raises(ConfigError, match=message):
        Trainer(_config(tmp_path, teacher_checkpoint, teacher_checkpoint=None), datasets=make_datasets())
    with pytest.raises(ConfigError, match="unknown timm model 'resnet_999'"):
        Trainer(_config(tmp_path, teacher_checkpoint, student="resnet_999"), datasets=make_datasets())
    with pytest.raises(ConfigError, match="batch_size 64 exceeds the 32 training images"):
        Trainer(_config(tmp_path, teacher_checkpoint, batch_size=64), datasets=make_datasets())


@pytest.mark.parametrize(
    "dataset, data_dir, message",
    [
        ("fashion_mnist", "/nonexistent/fmnist", "Fashion-MNIST data path /nonexistent/fmnist does not exist"),
        ("cifar100", "/nonexistent/cifar", "CIFAR-100 data path /nonexistent/cifar does not exist"),
        ("imagenet", None, "ImageNet needs data_dir"),
    ],
)
def test_missing_data_path_is_a_one_line_error(tmp_path, teacher_checkpoint, make_datasets, dataset, data_dir, message):
    config = _config(tmp_path, teacher_checkpoint, dataset=dataset, data_dir=data_dir)
    with pytest.raises(DataNotFoundError, match=message):
        Trainer(config)


def test_empty_fashion_mnist_folder(tmp_path, teacher_checkpoint, make_datasets):
    config = _config(tmp_path, teacher_checkpoint, data_dir=str(tmp_path))
    with pytest.raises(DataNotFoundError, match=r"train-images-idx3-ubyte\[.gz\] is not in"):
        Trainer(config)
