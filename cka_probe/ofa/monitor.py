"""CKA to the teacher while the student trains: the CKA analysis measured during training, not only after it.

A fixed probe set of validation images (``cka_probe_size``, 128 by default as in the OFA-KD paper's
analysis) is drawn once, class-balanced, with :func:`cka_probe.data.balanced_order` and probe seed 0 (the
same images whatever the run's seed, so every run of a study is measured on them). The teacher's features
are taken once and kept; at the end of an epoch the student (and its EMA) runs over the probe set in eval
mode under ``no_grad``, and each question gets one number:

* ``stage{s}``: the student's stage ``s`` against the teacher's stage ``s`` (the stage taps of
  :class:`~cka_probe.ofa.taps.StageTaps`, the same the OFA branches and FitNet read), for ``s = 1..4``;
* ``final``: the features the student's classifier reads against the teacher's (``forward_head(...,
  pre_logits=True)``).

Each tap is mean-pooled over its positions exactly as ``compare`` pools (``pool_activation``: a ViT's
prefix tokens are dropped by the taps, so it is the mean of its patch tokens), and the number is linear
CKA (biased HSIC, Kornblith et al. 2019) from ``compare``'s engine, :func:`cka_probe.math.cka_matrix`,
in float64: the diagonal of the student-against-teacher matrix of these five layers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Subset, TensorDataset

from .._choices import STAGES
from ..capture.pooling import pool_activation
from ..data import balanced_order
from ..math import cka_matrix
from .taps import StageTaps

__all__ = [
    "FINAL_NAME",
    "PROBE_SEED",
    "TeacherCKA",
    "cka_history",
    "dataset_labels",
    "draw_cka",
    "draw_cka_runs",
    "probe_images",
]

PROBE_SEED = 0
"""Seed of the probe draw: fixed, so that runs of different seeds and methods are measured on the same images."""

FINAL_NAME = "final"
"""Name of the pre-logit features in a record (the stages are ``stage1`` .. ``stage4``)."""


def dataset_labels(dataset: Dataset) -> list[int] | None:
    """The class index of every example, read without loading images: a data set's ``targets`` (torchvision's
    ``ImageFolder`` and ``CIFAR100``, :class:`~cka_probe.ofa.data.FashionMNIST`), a ``TensorDataset``'s second
    tensor, through ``Subset``; ``None`` when none is known (the probe is then a plain seeded shuffle)."""
    if isinstance(dataset, Subset):
        parent = dataset_labels(dataset.dataset)
        return None if parent is None else [parent[int(i)] for i in dataset.indices]
    if isinstance(dataset, TensorDataset):
        labels = dataset.tensors[1] if len(dataset.tensors) > 1 else None
        return labels.tolist() if labels is not None and labels.ndim == 1 else None
    targets = getattr(dataset, "targets", None)
    if targets is None or len(targets) != len(dataset):
        return None
    return [int(t) for t in targets]


def probe_images(dataset: Dataset, size: int, seed: int = PROBE_SEED) -> tuple[torch.Tensor, list[int]]:
    """The first ``size`` images of ``dataset`` in the seeded class-balanced order (all of them when it is smaller).

    Returns:
        ``(n, C, H, W)`` images as the data set's transform gives them, and their positions in ``dataset``.
    """
    order = balanced_order(list(range(len(dataset))), dataset_labels(dataset), seed)[:size]
    images = torch.stack([dataset[position][0] for position in order])
    return images, order


class TeacherCKA:
    """Linear CKA between each model of ``models`` and ``teacher`` on a fixed probe set, one number per stage.

    Args:
        teacher: the frozen teacher (its features are taken once, at the first call).
        models: name -> model to measure, e.g. ``{"student": student, "ema": ema_module}``.
        images: the probe images, on the models' device.
        batch_size: images per forward pass.

    Attributes:
        n: probe images.
        names: the questions, in order: ``stage1`` .. ``stage4`` and ``final``.

    Example:
        >>> import timm
        >>> teacher = timm.create_model("test_resnet", num_classes=10)
        >>> monitor = TeacherCKA(teacher, {"student": teacher}, torch.randn(8, 3, 32, 32))
        >>> {name: round(value, 6) for name, value in monitor.measure()["student"].items()}
        {'stage1': 1.0, 'stage2': 1.0, 'stage3': 1.0, 'stage4': 1.0, 'final': 1.0}
    """

    def __init__(
        self, teacher: nn.Module, models: Mapping[str, nn.Module], images: torch.Tensor, batch_size: int = 64
    ) -> None:
        input_size = tuple(images.shape[1:])
        self.images = images
        self.n = len(images)
        self.batch_size = max(1, int(batch_size))
        self.teacher_taps = StageTaps(teacher, input_size)
        self.taps = {name: StageTaps(model, input_size) for name, model in models.items()}
        self.stages = list(STAGES)
        self.names = [f"stage{stage}" for stage in self.stages] + [FINAL_NAME]
        self._teacher_features: dict[str, torch.Tensor] | None = None

    def measure(self) -> dict[str, dict[str, float]]:
        """``{model name: {"stage1": cka, ..., "stage4": cka, "final": cka}}`` for the models as they are now."""
        if self._teacher_features is None:
            self._teacher_features = self._features(self.teacher_taps)
        result = {}
        for name, taps in self.taps.items():
            matrix = cka_matrix(self._features(taps), self._teacher_features, kernel="linear")
            result[name] = {question: float(matrix.values[i, i]) for i, question in enumerate(matrix.rows)}
        return result

    def provenance(
        self, models: Mapping[str, Mapping[str, Any]], data: Mapping[str, Any], seconds: Mapping[str, float]
    ) -> dict[str, Any]:
        """The provenance header of these measurements (:func:`~cka_probe.engine.provenance.output_header`):
        ``models`` holds a record per model name and ``"teacher"``; every model's layers are the five questions."""
        from ..engine.estimation import CKASettings, number_formats, pooling_description
        from ..engine.provenance import output_header

        settings = CKASettings(kernel="linear", unbiased=False, estimator="full", precision="float64")
        labels = [*self.taps, "teacher"]
        return output_header(
            models=models,
            data=data,
            n=self.n,
            seed=PROBE_SEED,
            batch_size=self.batch_size,
            layers={label: [{"name": name} for name in self.names] for label in labels},
            pools=["mean"],
            pooling=pooling_description("mean"),
            tokens=dict.fromkeys(labels, "patch"),
            settings=settings.record(),
            dtype=number_formats(["mean"], settings.precision),
            device=str(self.images.device),
            seconds=seconds,
        )

    def _features(self, taps: StageTaps) -> dict[str, torch.Tensor]:
        """Mean-pooled ``(n, C)`` float32 features of every question, in :attr:`names` order."""
        pooled: dict[str, list[torch.Tensor]] = {name: [] for name in self.names}
        was_training = taps.model.training
        taps.model.eval()
        try:
            with torch.no_grad():
                for start in range(0, self.n, self.batch_size):
                    pre_logits, maps = taps(self.images[start : start + self.batch_size], self.stages, pre_logits=True)
                    for stage in self.stages:
                        pooled[f"stage{stage}"].append(pool_activation(maps[stage], "NCHW"))
                    pooled[FINAL_NAME].append(pool_activation(pre_logits, "NC"))
        finally:
            taps.model.train(was_training)
        return {name: torch.cat(parts) for name, parts in pooled.items()}


def cka_history(metrics: str | Path | Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """The records of a run's ``metrics.jsonl`` (a path, or the records) that hold CKA to the teacher."""
    if isinstance(metrics, (str, Path)):
        path = Path(metrics)
        lines = path.read_text().splitlines() if path.exists() else []
        metrics = [json.loads(line) for line in lines if line.strip()]
    return [dict(record) for record in metrics if "cka_to_teacher" in record]


def draw_cka(
    metrics: str | Path | Sequence[Mapping[str, Any]],
    path: str | Path,
    *,
    student: str,
    teacher: str,
    data: str,
    method: str = "",
) -> Path | None:
    """Draw one run's CKA to the teacher against epochs into the PNG ``path`` (``None``: nothing measured).

    Args:
        metrics: the run's ``metrics.jsonl`` (or its records).
        path: the PNG to write (atomically).
        student / teacher / data / method: for the title.
    """
    history = cka_history(metrics)
    if not history:
        return None
    from ..plots.training import plot_cka_to_teacher

    figure = plot_cka_to_teacher(history, student=student, teacher=teacher, data=data, method=method)
    return _save_png(figure, path)


def draw_cka_runs(
    runs: Mapping[str, str | Path], path: str | Path, *, student: str, teacher: str, data: str
) -> Path | None:
    """Draw several runs side by side (e.g. one per method of a study), one panel each, into the PNG ``path``.

    Args:
        runs: panel title (e.g. the method) -> the run's ``output_dir`` (its ``metrics.jsonl`` is read).
        path: the PNG to write (atomically).
        student / teacher / data: for the title.

    Returns:
        ``path``, or ``None`` when no run measured anything.
    """
    histories = {label: cka_history(Path(folder) / "metrics.jsonl") for label, folder in runs.items()}
    if not any(histories.values()):
        return None
    from ..plots.training import plot_cka_runs

    figure = plot_cka_runs(histories, student=student, teacher=teacher, data=data)
    return _save_png(figure, path)


def _save_png(figure, path: str | Path) -> Path:
    from .._files import atomic_path

    path = Path(path)
    with atomic_path(path) as tmp:
        figure.savefig(tmp, format="png", dpi=150)
    return path
