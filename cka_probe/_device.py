"""One device rule for every command: ``auto``, ``cpu``, ``mps``, ``cuda``, ``cuda:N`` (and any other torch device
string)."""

from __future__ import annotations

import torch

from ._choices import DEVICES, one_of
from .errors import DeviceError

__all__ = ["parse_device", "resolve_device"]


def parse_device(device: str | torch.device = "auto") -> str:
    """A ``--device`` value checked for form only: ``auto`` stays ``auto``, anything else as torch writes it.

    Nothing is looked up, so a job run on other machines (Ray workers) can check its device here and let each
    machine resolve it with :func:`resolve_device`. A string torch does not know raises
    :class:`~cka_probe.errors.DeviceError` (one line naming ``--device``).

    Example:
        >>> parse_device("cuda:1"), parse_device("auto")
        ('cuda:1', 'auto')
    """
    if str(device) == "auto":
        return "auto"
    try:
        return str(torch.device(device))
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {str(device)!r}; use --device {one_of(DEVICES)}") from None


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """The ``torch.device`` for a ``--device`` value.

    ``"auto"`` is the first CUDA GPU when there is one, else the CPU. A string torch does not know, or a
    CUDA device that this machine does not have, raises :class:`~cka_probe.errors.DeviceError` (one line
    naming ``--device``).

    Example:
        >>> resolve_device("cpu")
        device(type='cpu')
    """
    if parse_device(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise DeviceError(
                f"--device {resolved} was asked for but no CUDA GPU is available; use --device cpu or auto"
            )
        if resolved.index is not None and resolved.index >= count:
            raise DeviceError(f"--device {resolved} does not exist: this machine has {count} CUDA GPU(s); use cuda:0")
    return resolved
