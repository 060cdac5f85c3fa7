"""CKA to the teacher during training: the probe draw, the numbers against an independent reference, the log."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import Subset, TensorDataset

from cka_probe.ofa.monitor import TeacherCKA, cka_history, dataset_labels, probe_images


def _reference_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al. (2019), eq. (5): ||Y_c^T X_c||_F^2 / (||X_c^T X_c||_F ||Y_c^T Y_c||_F), float64."""
    x = x.astype(np.float64) - x.astype(np.float64).mean(0)
    y = y.astype(np.float64) - y.astype(np.float64).mean(0)
    return float(np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def _resnet_stage_means(model: torch.nn.Module, images: torch.Tensor) -> dict[str, np.ndarray]:
    """A timm ResNet's layer1..layer4 outputs (its four stages) averaged over H and W, and its pooled features."""
    outputs = {}
    handles = [
        getattr(model, f"layer{s}").register_forward_hook(lambda m, i, o, s=s: outputs.__setitem__(s, o))
        for s in range(1, 5)
    ]
    model.eval()
    with torch.no_grad():
        model(images)
    for handle in handles:
        handle.remove()
    means = {f"stage{s}": outputs[s].mean(dim=(2, 3)).numpy() for s in range(1, 5)}
    means["final"] = outputs[4].mean(dim=(2, 3)).numpy()  # ResNet: global average pool, then fc
    return means


def test_cka_to_teacher_is_linear_cka_of_the_mean_pooled_stages():
    torch.manual_seed(0)
    teacher = timm.create_model("test_resnet", num_classes=10)
    torch.manual_seed(1)
    student = timm.create_model("test_resnet", num_classes=10)
    images = torch.randn(24, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    student.train()
    measured = TeacherCKA(teacher, {"student": student}, images, batch_size=10).measure()["student"]
    assert student.training  # measured in eval mode, then put back

    s_means, t_means = _resnet_stage_means(student, images), _resnet_stage_means(teacher, images)
    assert list(measured) == ["stage1", "stage2", "stage3", "stage4", "final"]
    for name, value in measured.items():
        assert value == pytest.approx(_reference_linear_cka(s_means[name], t_means[name]), abs=1e-6), name
    assert 0.0 < min(measured.values()) < max(measured.values()) < 1.0


def test_teacher_features_are_taken_once_and_each_model_is_measured():
    torch.manual_seed(0)
    teacher = timm.create_model("test_resnet", num_classes=10)
    calls = []
    teacher.conv1.register_forward_pre_hook(lambda *args: calls.append(1))  # the stem: every pass runs it
    torch.manual_seed(1)
    student = timm.create_model("test_vit", num_classes=10, img_size=32)
    ema = timm.create_model("test_vit", num_classes=10, img_size=32)
    images = torch.randn(8, 3, 32, 32)
    monitor = TeacherCKA(teacher, {"student": student, "ema": ema}, images, batch_size=8)
    dry_runs = len(calls)
    first, second = monitor.measure(), monitor.measure()
    assert len(calls) - dry_runs == 1  # one batch of the teacher, for both calls
    assert set(first) == {"student", "ema"} and first == second
    assert first["student"] != first["ema"]  # two different models, two sets of numbers


def test_the_probe_is_class_balanced_seeded_and_capped_at_the_data_set():
    labels = torch.arange(100) % 4
    images = torch.arange(100, dtype=torch.float32).reshape(100, 1, 1, 1)
    dataset = TensorDataset(images, labels)
    probe, order = probe_images(dataset, 40)
    assert probe.shape == (40, 1, 1, 1) and len(set(order)) == 40
    assert Counter(labels[order].tolist()) == {0: 10, 1: 10, 2: 10, 3: 10}
    assert [int(labels[i]) for i in order[:4]] == [0, 1, 2, 3]  # round robin over the classes
    assert torch.equal(probe[:, 0, 0, 0], images[order, 0, 0, 0])
    assert probe_images(dataset, 40)[1] == order  # the same draw every time
    assert probe_images(dataset, 40, seed=1)[1] != order
    assert len(probe_images(dataset, 500)[1]) == 100


def test_labels_are_read_without_loading_images():
    class Targets(torch.utils.data.Dataset):
        targets = [3, 1, 2]

        def __len__(self):
            return 3

        def __getitem__(self, index):
            raise AssertionError("no image is loaded to read the labels")

    assert dataset_labels(Targets()) == [3, 1, 2]
    assert dataset_labels(Subset(Targets(), [2, 0])) == [2, 3]
    assert dataset_labels(TensorDataset(torch.zeros(2, 1), torch.tensor([5, 6]))) == [5, 6]
    assert dataset_labels(TensorDataset(torch.zeros(2, 1))) is None


def test_history_keeps_the_records_that_hold_cka(tmp_path):
    path = tmp_path / "metrics.jsonl"
    records = [{"epoch": 1}, {"epoch": 2, "cka_to_teacher": {"n": 8, "student": {"stage1": 0.5}}}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert cka_history(path) == records[1:]
    assert cka_history(records) == records[1:]
    assert cka_history(tmp_path / "none.jsonl") == []


def test_several_runs_are_drawn_side_by_side_and_nothing_measured_draws_nothing(tmp_path):
    from cka_probe.ofa.monitor import draw_cka, draw_cka_runs

    record = {"epoch": 1, "cka_to_teacher": {"n": 8, "student": {"stage1": 0.5, "final": 0.25}}}
    for method, records in (("kd", [record]), ("ofa", [record]), ("scratch", [{"epoch": 1}])):
        (tmp_path / method).mkdir()
        (tmp_path / method / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    kwargs = {"student": "s", "teacher": "t", "data": "d"}
    target = tmp_path / "methods.png"
    runs = {method: tmp_path / method for method in ("scratch", "kd", "ofa")}
    assert draw_cka_runs(runs, target, **kwargs) == target and target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert draw_cka_runs({"scratch": tmp_path / "scratch"}, tmp_path / "none.png", **kwargs) is None
    assert draw_cka(tmp_path / "scratch" / "metrics.jsonl", tmp_path / "none.png", **kwargs) is None
    assert not (tmp_path / "none.png").exists()
