"""Local checkpoints: read one (``torch.load(weights_only=True)`` or safetensors), find its state dict, load it.

A checkpoint (``.pth``, ``.pt``, ``.bin``, ``.pth.tar`` or ``.safetensors``) may hold a bare state dict or one
wrapped under ``"state_dict"``, ``"model"``, ``"state_dict_ema"`` or ``"model_ema"``; the first of those keys
present wins, so EMA weights are used only when the checkpoint holds nothing else. ``module.`` (DDP) and
``_orig_mod.`` (``torch.compile``) prefixes are stripped with timm's ``clean_state_dict``.
"""

from __future__ import annotations

import argparse
import os
import pickle
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import timm.models
import torch
from torch import nn

from .._files import sha256_file
from ..errors import CheckpointError, CheckpointMismatchError

__all__ = ["CHECKPOINT_KEYS", "CheckpointKeysWarning", "LoadedCheckpoint", "load_checkpoint"]

#: Wrapper keys searched, in this order, for the state dict inside a checkpoint.
CHECKPOINT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")

_SUFFIXES = (".pth", ".pt", ".bin", ".pth.tar", ".safetensors")


class CheckpointKeysWarning(UserWarning):
    """A checkpoint that left some model parameters at their initialisation, or held keys the model ignores."""


@dataclass(frozen=True)
class LoadedCheckpoint:
    """What loading a checkpoint into a model did.

    Attributes:
        path: Absolute path of the file.
        sha256: Hex SHA-256 of the file's bytes.
        key: The wrapper key the state dict was found under, or ``""`` for a bare state dict.
        missing_keys: Model entries the checkpoint did not provide (left at their seeded initialisation).
        unexpected_keys: Checkpoint entries the model has no place for (ignored).
    """

    path: str
    sha256: str
    key: str
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]


def _unsafe_globals(path: Path) -> list[str]:
    """Python objects a torch.save file needs that weights-only loading refuses; empty if it is no such file."""
    try:
        return list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, OSError):
        return []


def _read(path: Path) -> object:
    if path.name.endswith(".safetensors"):
        try:
            return safetensors.torch.load_file(str(path), device="cpu")
        except safetensors.SafetensorError as exc:
            raise CheckpointError(f"cannot read safetensors checkpoint {path} ({exc}); check the file") from exc
    try:
        # timm training checkpoints keep their argparse arguments next to the weights
        with torch.serialization.safe_globals([argparse.Namespace]):
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise CheckpointError(f"cannot read checkpoint {path} (not a torch.save file); check the file") from exc
        raise CheckpointError(
            f"checkpoint {path} holds Python objects that torch.load(weights_only=True) refuses "
            f"({', '.join(unsafe[:3])}); re-save just its weights with torch.save(model.state_dict(), PATH)"
        ) from exc
    except (RuntimeError, EOFError) as exc:
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({detail}); check the file") from exc


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _unwrap(checkpoint: object, path: Path) -> tuple[dict[str, torch.Tensor], str]:
    if _is_state_dict(checkpoint):
        return dict(checkpoint), ""
    if isinstance(checkpoint, Mapping):
        for key in CHECKPOINT_KEYS:
            if _is_state_dict(checkpoint.get(key)):
                return dict(checkpoint[key]), key
    keys = ", ".join(map(str, list(checkpoint)[:6])) if isinstance(checkpoint, Mapping) else type(checkpoint).__name__
    raise CheckpointError(
        f"checkpoint {path} holds no state dict (found: {keys}); save a bare state dict "
        f"or wrap it under one of {', '.join(CHECKPOINT_KEYS)}"
    )


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _mismatch_hint(model: nn.Module, mismatched: list[str], state_dict: Mapping[str, torch.Tensor]) -> str:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(classifier, str) and all(k.startswith(classifier + ".") for k in mismatched):
        weight = state_dict.get(f"{classifier}.weight")
        if weight is not None and weight.ndim >= 1:
            return f"only the classifier differs: pass num_classes={weight.shape[0]}"
    return "pass the model name it was saved from"


def load_checkpoint(model: nn.Module, path: str | os.PathLike, model_label: str) -> LoadedCheckpoint:
    """Load a checkpoint file into ``model`` in place, refusing one saved from another architecture.

    Args:
        model: The model, already initialised (its entries the checkpoint lacks keep that initialisation).
        path: A ``.pth``, ``.pt``, ``.bin``, ``.pth.tar`` or ``.safetensors`` file.
        model_label: How errors name the model (e.g. its timm name).

    Returns:
        The file's path and hash, the wrapper key used, and the missing and unexpected keys.

    Raises:
        CheckpointError: The file is missing, of an unsupported type, unreadable, or holds no state dict.
        CheckpointMismatchError: No entry name in common with the model, or entries whose shapes differ.

    Warns:
        CheckpointKeysWarning: Some keys were missing or unexpected (they are also in the result).
    """
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    if not path.name.endswith(_SUFFIXES):
        raise CheckpointError(f"checkpoint {path} has an unsupported type; use one of {', '.join(_SUFFIXES)}")
    state_dict, key = _unwrap(_read(path), path)
    state_dict = timm.models.clean_state_dict(state_dict)

    model_state = model.state_dict()
    common = [k for k in model_state if k in state_dict]
    if not common:
        raise CheckpointMismatchError(
            f"checkpoint {path} shares no parameter name with {model_label} "
            f"(e.g. {next(iter(state_dict))!r} vs {next(iter(model_state))!r}); pass the model name it was saved from"
        )
    mismatched = [k for k in common if _shape(state_dict[k]) != _shape(model_state[k])]
    if mismatched:
        first = mismatched[0]
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit {model_label}: {len(mismatched)} tensor(s) differ in shape, e.g. "
            f"{first} {_shape(state_dict[first])} in the checkpoint vs {_shape(model_state[first])} in the model; "
            f"{_mismatch_hint(model, mismatched, state_dict)}"
        )
    result = model.load_state_dict(state_dict, strict=False)
    missing, unexpected = tuple(result.missing_keys), tuple(result.unexpected_keys)
    if missing or unexpected:
        warnings.warn(
            CheckpointKeysWarning(
                f"checkpoint {path.name} into {model_label}: {len(missing)} missing key(s) kept at their seeded "
                f"initialisation {list(missing[:3])}, "
                f"{len(unexpected)} unexpected key(s) ignored {list(unexpected[:3])}"
            ),
            stacklevel=3,
        )
    return LoadedCheckpoint(
        path=str(path), sha256=sha256_file(path), key=key, missing_keys=missing, unexpected_keys=unexpected
    )
