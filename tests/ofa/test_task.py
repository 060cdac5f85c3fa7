"""The distillation task: named losses, frozen teacher, one optimisation step, pairing errors."""

from __future__ import annotations

import pytest
import torch
from timm.optim import create_optimizer_v2

from cka_probe.errors import ConfigError, ModelMismatchError, StageError
from cka_probe.ofa.losses import kd_loss, ofa_loss
from cka_probe.ofa.task import DistillationTask

PAIRS = [("resnet", "vit"), ("vit", "resnet"), ("mixer", "convnext"), ("swin", "resnet")]


def _task(model_factory, method, student="resnet", teacher="vit", **kwargs):
    return DistillationTask(
        method,
        model_factory(student, seed=1),
        None if method == "scratch" else model_factory(teacher, seed=2),
        torch.nn.CrossEntropyLoss(),
        (3, 32, 32),
        **kwargs,
    )


@pytest.mark.parametrize(
    "method, parts",
    [
        ("scratch", {"ce"}),
        ("kd", {"ce", "kd"}),
        ("fitnet", {"ce", "fitnet_stage1", "fitnet_stage2", "fitnet_stage3", "fitnet_stage4"}),
        ("ofa", {"ce", "ofa_logits", "ofa_stage1", "ofa_stage2", "ofa_stage3", "ofa_stage4"}),
    ],
)
def test_forward_returns_named_losses_and_their_weighted_sum(model_factory, images, labels, method, parts):
    task = _task(
        model_factory, method, gt_loss_weight=0.5, kd_loss_weight=2.0, ofa_loss_weight=0.25, fitnet_loss_weight=3.0
    )
    out = task(images, labels)
    assert set(out) == {"loss", "output"} | parts
    assert out["output"].shape == (4, 10)
    weights = {"ce": 0.5, "kd": 2.0, "ofa_logits": 2.0}
    expected = sum(weights.get(name, 3.0 if name.startswith("fitnet") else 0.25) * out[name] for name in parts)
    assert torch.allclose(out["loss"], expected)


def test_ofa_components_match_the_loss_function(model_factory, images, labels):
    task = _task(model_factory, "ofa", ofa_stages=[2, 4], ofa_gamma=[1.2, 1.4, 1.6], ofa_temperature=2.0)
    task.eval()
    out = task(images, labels)
    with torch.no_grad():
        teacher_logits = task.teacher(images)
        logits, features = task.student_taps(images, [2, 4])
        branch4 = task.trainable.branches["stage4"](features[4])
    assert torch.allclose(out["ofa_logits"], ofa_loss(logits, teacher_logits, labels, 1.6, 2.0), atol=1e-6)
    assert torch.allclose(out["ofa_stage4"], ofa_loss(branch4, teacher_logits, labels, 1.4, 2.0), atol=1e-6)
    assert set(task.trainable.branches) == {"stage2", "stage4"}


def test_kd_component_matches_the_loss_function(model_factory, images, labels):
    task = _task(model_factory, "kd", kd_temperature=3.0).eval()
    out = task(images, labels)
    with torch.no_grad():
        expected = kd_loss(task.student(images), task.teacher(images), 3.0)
    assert torch.allclose(out["kd"], expected, atol=1e-6)


@pytest.mark.parametrize("method", ["kd", "fitnet", "ofa"])
def test_teacher_is_frozen_in_eval_mode_and_gets_no_gradient(model_factory, images, labels, method):
    task = _task(model_factory, method)
    task.train()
    assert task.student.training and not task.teacher.training
    before = {k: v.clone() for k, v in task.teacher.state_dict().items()}
    task(images, labels)["loss"].backward()
    assert all(p.grad is None and not p.requires_grad for p in task.teacher.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in task.student.parameters())
    if method != "kd":
        extra = task.trainable.branches if method == "ofa" else task.trainable.adapters
        assert all(p.grad is not None for p in extra.parameters())
    assert all(torch.equal(before[k], v) for k, v in task.teacher.state_dict().items())
    assert not any(name.startswith("teacher") for name, _ in task.trainable.named_parameters())


@pytest.mark.parametrize("method", ["scratch", "kd", "fitnet", "ofa"])
@pytest.mark.parametrize("student, teacher", PAIRS)
def test_one_step_lowers_the_loss_on_a_fixed_batch(model_factory, images, labels, method, student, teacher):
    task = _task(model_factory, method, student=student, teacher=teacher)
    task.train()
    optimizer = create_optimizer_v2(task.trainable, opt="adamw", lr=1e-3, weight_decay=0.0)
    first = task(images, labels)["loss"]
    optimizer.zero_grad()
    first.backward()
    optimizer.step()
    with torch.no_grad():
        second = task(images, labels)["loss"]
    assert second < first


def test_teacher_and_student_with_different_classes_are_refused(model_factory):
    with pytest.raises(ModelMismatchError, match="teacher .* has 100 classes, student .* has 10"):
        DistillationTask(
            "kd",
            model_factory("resnet"),
            model_factory("vit", num_classes=100),
            torch.nn.CrossEntropyLoss(),
            (3, 32, 32),
        )


def test_same_module_as_teacher_and_student_is_refused(model_factory):
    model = model_factory("resnet")
    with pytest.raises(ModelMismatchError, match="same module"):
        DistillationTask("kd", model, model, torch.nn.CrossEntropyLoss(), (3, 32, 32))


def test_unknown_method_and_missing_stage_are_refused(model_factory):
    with pytest.raises(ConfigError, match="unknown method 'dkd'; valid methods: scratch, kd, fitnet, ofa"):
        _task(model_factory, "dkd")
    with pytest.raises(StageError, match=r"stage 5 does not exist .* valid stages are \[1, 2, 3, 4\]"):
        _task(model_factory, "ofa", ofa_stages=[1, 5])
    with pytest.raises(StageError, match="stage 0 does not exist"):
        _task(model_factory, "fitnet", fitnet_stages=[0])
    with pytest.raises(ConfigError, match="ofa_gamma has 2 values; expected 1 or 5"):
        _task(model_factory, "ofa", ofa_gamma=[1.0, 2.0])
    with pytest.raises(ConfigError, match="needs a teacher"):
        DistillationTask("ofa", model_factory("resnet"), None, torch.nn.CrossEntropyLoss(), (3, 32, 32))
