"""Training checkpoints: atomic writes, and state dicts checked against the modules they are loaded into.

A training checkpoint holds only tensors and plain types (state dicts, numbers, strings, lists,
dicts), so it loads with ``torch.load(weights_only=True)``; it is read by the package's one checkpoint
reader, :func:`cka_probe.models.read_checkpoint`.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._files import atomic_path
from ..errors import CheckpointError
from ..models._checkpoint import TRAINING_CHECKPOINT_FORMAT as CHECKPOINT_FORMAT

__all__ = ["CHECKPOINT_FORMAT", "check_state_dict", "save_checkpoint"]


def save_checkpoint(state: Mapping[str, Any], path: str | Path) -> Path:
    """Write ``state`` to ``path`` atomically: a temporary file in the same folder, then a rename.

    A crash mid-write leaves the previous checkpoint intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        torch.save(dict(state), tmp)
    return path


def check_state_dict(model: nn.Module, state_dict: Mapping[str, Any], what: str) -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and mis-shaped keys, if any."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state_dict]
    unexpected = [k for k in state_dict if k not in expected]
    mis_shaped = [
        f"{k} {tuple(state_dict[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state_dict and torch.is_tensor(state_dict[k]) and tuple(state_dict[k].shape) != tuple(v.shape)
    ]
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[0]})")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected keys (e.g. {unexpected[0]})")
    if mis_shaped:
        problems.append(f"{len(mis_shaped)} shape mismatches (e.g. {mis_shaped[0]})")
    if problems:
        raise CheckpointError(f"{what} does not fit {type(model).__name__}: {'; '.join(problems)}")
