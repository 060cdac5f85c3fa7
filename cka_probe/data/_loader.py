"""Batches of a probe set as tensors, in the probe set's order, through one model's transform."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from ..errors import ArgumentError
from ._probe_set import ProbeSet

__all__ = ["ProbeDataset", "batches"]


class ProbeDataset(Dataset):
    """A probe set as a map-style dataset of ``(transform(image), position)``.

    Args:
        probe: The probe set.
        transform: PIL image -> ``(C, H, W)`` tensor, e.g. :func:`cka_probe.models.transform_for`.
    """

    def __init__(self, probe: ProbeSet, transform: Callable[[Image.Image], torch.Tensor]) -> None:
        self.probe = probe
        self.transform = transform

    def __len__(self) -> int:
        return self.probe.n

    def __getitem__(self, position: int) -> tuple[torch.Tensor, int]:
        return self.transform(self.probe.images[position]), position


def batches(
    probe: ProbeSet,
    transform: Callable[[Image.Image], torch.Tensor],
    batch_size: int = 32,
    num_workers: int = 0,
    bounds: Sequence[tuple[int, int]] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(images, positions)`` batches in the probe set's order (no shuffling, last batch may be short).

    Args:
        probe: The probe set.
        transform: The model's preprocessing.
        batch_size: Images per batch.
        num_workers: DataLoader worker processes (0 decodes in this process).
        bounds: explicit ``[start, stop)`` ranges of the batches, in order, covering the probe set
            (replaces ``batch_size``; the CKA estimators use it to keep a short last batch whole).

    Yields:
        ``images`` as a float tensor ``(B, C, H, W)`` and ``positions`` as an int64 tensor ``(B,)`` of
        indices into the probe set.

    Example:
        >>> import torchvision.transforms.functional as F
        >>> from cka_probe.data import load_probe_set
        >>> probe = load_probe_set("synthetic", n=5)
        >>> [(images.shape[0], positions.tolist()) for images, positions in batches(probe, F.to_tensor, 2)]
        [(2, [0, 1]), (2, [2, 3]), (1, [4])]
    """
    if batch_size < 1:
        raise ArgumentError(f"batch_size must be at least 1, got {batch_size} (--batch-size on the command line)")
    dataset = ProbeDataset(probe, transform)
    if bounds is not None:
        ranges = [list(range(start, stop)) for start, stop in bounds]
        yield from DataLoader(dataset, batch_sampler=ranges, num_workers=num_workers)
        return
    yield from DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=num_workers)
