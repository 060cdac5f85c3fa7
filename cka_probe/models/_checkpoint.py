"""The one checkpoint reader of cka-probe: read a file safely, find its state dict, load it into a model.

Reading (:func:`read_checkpoint`): ``torch.load(weights_only=True)`` with an allowlist of exactly the
harmless globals the known formats pickle (:data:`SAFE_GLOBALS`: the ``argparse.Namespace`` that timm's
``CheckpointSaver``, hence the official OFA-KD ``train.py``, saves beside the weights), or safetensors.
Nothing else is ever unpickled: a file needing any other global is refused, naming it.

Finding the state dict (:func:`select_state_dict`), by ``select``:

* ``"auto"``: a cka-probe training checkpoint gives its ``"student"``; any other file the first of
  :data:`CHECKPOINT_KEYS` it holds (``state_dict``, ``model``, ``state_dict_ema``, ``model_ema``), or
  itself when it is a bare state dict. EMA weights are used only when the file holds nothing else.
* ``"student"``: the trained weights (``student`` of a cka-probe run, ``state_dict`` / ``model`` else).
* ``"ema"``: the EMA weights (``ema`` of a cka-probe run, ``state_dict_ema`` / ``model_ema`` else).

``module.`` (DDP) and ``_orig_mod.`` (``torch.compile``) prefixes are stripped with timm's
``clean_state_dict``. A state dict that does not fit the model as saved is passed through the model's
own timm ``checkpoint_filter_fn`` (e.g. Swin checkpoints written by timm 0.6, with the old layout of
the patch-merging layers and ``head.weight``) before the fit is judged.
"""

from __future__ import annotations

import argparse
import os
import pickle
import struct
import sys
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import timm.models
import torch
from torch import nn

from .._choices import CHECKPOINT_SELECT, CHECKPOINT_SUFFIXES
from .._files import sha256_file
from ..errors import CheckpointError, CheckpointMismatchError, UnsafeCheckpointError
from ._run import RunRecord, official_run_record, run_record

__all__ = [
    "CHECKPOINT_KEYS",
    "CHECKPOINT_SELECT",
    "EMA_KEYS",
    "SAFE_GLOBALS",
    "TRAINING_CHECKPOINT_FORMAT",
    "CheckpointKeysWarning",
    "LoadedCheckpoint",
    "SelectedState",
    "checkpoint_model_name",
    "checkpoint_num_classes",
    "load_checkpoint",
    "read_checkpoint",
    "select_state_dict",
]

#: Wrapper keys searched, in this order, for the state dict inside a checkpoint that is not a cka-probe run's.
CHECKPOINT_KEYS = ("state_dict", "model", "state_dict_ema", "model_ema")

#: Which weights of a checkpoint to load: see the module docstring.

#: Python objects a checkpoint may pickle besides tensors and plain types; nothing else is unpickled.
SAFE_GLOBALS = (argparse.Namespace,)

#: The ``format`` entry of the checkpoints ``cka-probe train`` writes.
TRAINING_CHECKPOINT_FORMAT = "cka-probe/ofa-train/1"

#: Keys under which checkpoints keep EMA weights (a cka-probe run's, a timm ``CheckpointSaver``'s).
EMA_KEYS = ("ema", "state_dict_ema", "model_ema")

_SELECT_KEYS = {
    "student": ("student", "state_dict", "model"),
    "ema": EMA_KEYS,
}


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
        run: What a ``cka-probe train`` checkpoint records of its run (model kwargs, evaluation data config,
            epoch), or ``None`` for any other file.
    """

    path: str
    sha256: str
    key: str
    missing_keys: tuple[str, ...]
    unexpected_keys: tuple[str, ...]
    run: RunRecord | None = None


@dataclass(frozen=True)
class SelectedState:
    """A state dict found in a checkpoint, and what the checkpoint says about the model it belongs to.

    Attributes:
        state_dict: The weights, prefixes stripped.
        key: The wrapper key they were under (``""`` for a bare state dict).
        model_name: The timm name the checkpoint records (``model`` of a cka-probe run, ``arch`` of a timm
            ``CheckpointSaver`` file), or ``None``.
        run: What a ``cka-probe train`` checkpoint records of its run (:class:`~cka_probe.models._run.RunRecord`:
            the student's kwargs, the evaluation data config, the epoch), or ``None`` for any other file.
    """

    state_dict: dict[str, torch.Tensor]
    key: str
    model_name: str | None
    run: RunRecord | None = None


def _checked_path(path: str | os.PathLike) -> Path:
    path = Path(path).expanduser().resolve()
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} does not exist; check the path")
    if not path.name.endswith(CHECKPOINT_SUFFIXES):
        raise CheckpointError(f"checkpoint {path} has an unsupported type; use one of {', '.join(CHECKPOINT_SUFFIXES)}")
    return path


def _global_name(obj: type) -> str:
    return f"{obj.__module__}.{obj.__qualname__}"


def read_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint file without running pickled code.

    ``.safetensors`` files are read with safetensors; every other file with ``torch.load(weights_only=True)``
    under ``torch.serialization.safe_globals(SAFE_GLOBALS)``.

    Args:
        path: A ``.pth``, ``.pt``, ``.bin``, ``.pth.tar`` or ``.safetensors`` file.
        map_location: Where tensors are put.

    Returns:
        The file's top-level mapping (a state dict, or a wrapper holding one).

    Raises:
        CheckpointError: The file is missing, of an unsupported type, unreadable, or not a mapping.
        UnsafeCheckpointError: It pickles a Python global outside :data:`SAFE_GLOBALS` (the message names it).
    """
    path = _checked_path(path)
    if path.name.endswith(".safetensors"):
        try:
            return safetensors.torch.load_file(str(path), device=str(map_location))
        except safetensors.SafetensorError as exc:
            raise CheckpointError(f"cannot read safetensors checkpoint {path} ({exc}); check the file") from exc
    try:
        with torch.serialization.safe_globals(list(SAFE_GLOBALS)), warnings.catch_warnings():
            # torch warns about the pickle protocol of files it then refuses: the error below says what they are
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        unsafe = _unsafe_globals(path)
        if not unsafe:
            raise CheckpointError(_unreadable_pickle(path, exc)) from exc
        allowed = ", ".join(_global_name(g) for g in SAFE_GLOBALS)
        raise UnsafeCheckpointError(
            f"checkpoint {path} pickles {', '.join(unsafe[:3])}, outside the allowlist of harmless globals "
            f"({allowed}) that torch.load(weights_only=True) refuses; "
            "re-save just its weights with torch.save(model.state_dict(), PATH)"
        ) from exc
    except (KeyError, IndexError) as exc:  # bytes that are no pickle send torch's unpickler astray
        raise CheckpointError(_unreadable_pickle(path, exc)) from exc
    except (RuntimeError, EOFError, OSError, ValueError, struct.error) as exc:  # truncated or foreign bytes
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise CheckpointError(f"cannot read checkpoint {path} ({detail}); check the file") from exc
    if not isinstance(state, Mapping):
        raise CheckpointError(f"checkpoint {path} holds a {type(state).__name__}, not a state dict or a mapping")
    return dict(state)


def _unreadable_pickle(path: Path, exc: Exception) -> str:
    """What a file that ``torch.load(weights_only=True)`` cannot unpickle is, and what to do with it."""
    with open(path, "rb") as handle:
        head = handle.read(64)
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    # torch's message is a page of advice; the unpickler's own reason is the line after "WeightsUnpickler error:"
    reason = [line for before, line in zip(lines, lines[1:]) if before.endswith("WeightsUnpickler error:")]
    detail = reason[0] if reason and isinstance(exc, pickle.UnpicklingError) else type(exc).__name__
    if torch.serialization.MAGIC_NUMBER.to_bytes(10, "little") in head:
        return (
            f"checkpoint {path} is a legacy torch.save file (the format before torch 1.6, not a zip archive) that "
            f"torch.load(weights_only=True) cannot read ({detail}); if you trust its source, re-save it as a current "
            "one: torch.save(torch.load(OLD, weights_only=False), NEW), and pass NEW"
        )
    if head[:1] == b"\x80":  # pickle's PROTO opcode, without torch.save's zip archive around it
        return (
            f"checkpoint {path} is a plain pickle file (pickle.dump), not a torch.save file; cka-probe does not "
            "unpickle arbitrary objects: save the weights with torch.save(model.state_dict(), PATH) and pass PATH"
        )
    return (
        f"cannot read checkpoint {path}: not a torch.save file ({detail}); pass a .pth/.pt/.bin written by torch.save"
    )


def _unsafe_globals(path: Path) -> list[str]:
    """Globals of a torch.save file outside :data:`SAFE_GLOBALS`; empty if it is no such file."""
    try:
        found = list(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
    except (ValueError, RuntimeError, OSError):
        return []
    allowed = {_global_name(g) for g in SAFE_GLOBALS}
    return sorted(name for name in found if name not in allowed)


def _is_state_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(isinstance(v, torch.Tensor) for v in obj.values())


def _is_training_checkpoint(checkpoint: Mapping[str, Any]) -> bool:
    return checkpoint.get("format") == TRAINING_CHECKPOINT_FORMAT


def select_state_dict(checkpoint: Mapping[str, Any], path: str | os.PathLike, select: str = "auto") -> SelectedState:
    """Find the state dict ``select`` asks for in a checkpoint read by :func:`read_checkpoint`.

    Args:
        checkpoint: The file's top-level mapping.
        path: The file (for messages).
        select: ``"auto"``, ``"student"`` or ``"ema"`` (see the module docstring).

    Raises:
        CheckpointError: No such state dict in the file (the message lists what it holds), or a run's config
            that does not say how the run evaluated (see :func:`~cka_probe.models._run.run_record`).
    """
    if select not in CHECKPOINT_SELECT:
        raise CheckpointError(f"unknown checkpoint selection {select!r}; use one of {', '.join(CHECKPOINT_SELECT)}")
    model_name = _recorded_model_name(checkpoint)
    run = run_record(checkpoint, path) if _is_training_checkpoint(checkpoint) else official_run_record(checkpoint)
    if select == "auto":
        if _is_training_checkpoint(checkpoint):
            keys: tuple[str, ...] = ("student",)
        elif _is_state_dict(checkpoint):
            return SelectedState(timm.models.clean_state_dict(dict(checkpoint)), "", model_name)
        else:
            keys = CHECKPOINT_KEYS
    else:
        keys = _SELECT_KEYS[select]
    for key in keys:
        if _is_state_dict(checkpoint.get(key)):
            return SelectedState(timm.models.clean_state_dict(dict(checkpoint[key])), key, model_name, run)
    found = ", ".join(str(k) for k in list(checkpoint)[:6])
    if select == "ema":
        raise CheckpointError(
            f"checkpoint {path} holds no EMA weights (found: {found}); select the student weights, "
            "or train with ema_decay set"
        )
    raise CheckpointError(
        f"checkpoint {path} holds no state dict (found: {found}); save a bare state dict "
        f"or wrap it under one of {', '.join(CHECKPOINT_KEYS)}"
    )


def _recorded_model_name(checkpoint: Mapping[str, Any]) -> str | None:
    if _is_training_checkpoint(checkpoint):
        name = checkpoint.get("model")
        return name if isinstance(name, str) else None
    args = checkpoint.get("args")
    if isinstance(args, argparse.Namespace) and isinstance(getattr(args, "model", None), str):
        return args.model
    arch = checkpoint.get("arch")
    return arch if isinstance(arch, str) and timm.is_model(arch) else None


def checkpoint_model_name(path: str | os.PathLike) -> str:
    """The timm model name a checkpoint records: a ``cka-probe train`` run's student, or the ``--model`` of a
    timm / official OFA-KD ``train.py`` checkpoint.

    Raises:
        CheckpointError: The file records no model name (give the model name with the checkpoint instead).
    """
    name = _recorded_model_name(read_checkpoint(path))
    if name is None:
        raise CheckpointError(
            f"checkpoint {Path(path)} does not record its model; name the model and give the file as its checkpoint "
            "(--checkpoint-a/-b, or checkpoint: in a config's model entry)"
        )
    return name


def checkpoint_num_classes(state_dict: Mapping[str, torch.Tensor], timm_name: str) -> int | None:
    """The classifier size of ``timm_name``'s weights in ``state_dict``: rows of its classifier weight.

    The classifier is the one timm's pretrained config names (``fc``, ``head``, ``head.fc``, ...), or its
    older place where timm has moved it: ``head.fc`` was ``head`` in the Swin checkpoints of timm 0.6 and of
    Microsoft's releases. ``None`` when the state dict has no such entry (or the model has none).
    """
    cfg = timm.models.get_pretrained_cfg(timm_name)
    classifier = getattr(cfg, "classifier", None)
    names = classifier if isinstance(classifier, (list, tuple)) else [classifier]
    return _classifier_rows(state_dict, [name for name in names if isinstance(name, str)])


def _classifier_rows(state_dict: Mapping[str, torch.Tensor], classifiers: list[str]) -> int | None:
    """Rows of the first classifier weight found, at its current name or (``X.fc`` -> ``X``) its old one."""
    for name in classifiers:
        candidates = [name] + ([name.rsplit(".", 1)[0]] if name.endswith(".fc") else [])
        for candidate in candidates:
            weight = state_dict.get(f"{candidate}.weight")
            if weight is not None and weight.ndim >= 1:
                return int(weight.shape[0])
    return None


def _shape(tensor: torch.Tensor) -> tuple[int, ...]:
    return tuple(tensor.shape)


def _filter_for(model: nn.Module, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The model's own timm ``checkpoint_filter_fn`` (old layouts to the current one), where it has one."""
    module = sys.modules.get(type(model).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state_dict
    try:
        return dict(filter_fn(state_dict, model))
    except (KeyError, RuntimeError, ValueError, TypeError, AttributeError, IndexError):
        return state_dict


def _fits(model_state: Mapping[str, torch.Tensor], state_dict: Mapping[str, torch.Tensor]) -> bool:
    return set(model_state) == set(state_dict) and all(
        _shape(state_dict[k]) == _shape(v) for k, v in model_state.items()
    )


def _mismatch_hint(model: nn.Module, mismatched: list[str], state_dict: Mapping[str, torch.Tensor]) -> str:
    classifier = getattr(model, "pretrained_cfg", {}).get("classifier")
    if isinstance(classifier, str) and all(k.startswith(classifier + ".") for k in mismatched):
        classes = _classifier_rows(state_dict, [classifier])
        if classes is not None:  # the count checkpoint_num_classes reads by default
            return (
                f"only the classifier differs: the checkpoint has {classes} classes; "
                f"leave --num-classes out or set it to {classes}"
            )
    return "pass the model name it was saved from"


def load_checkpoint(
    model: nn.Module,
    path: str | os.PathLike,
    model_label: str,
    select: str = "auto",
    strict: bool = False,
    selected: SelectedState | None = None,
) -> LoadedCheckpoint:
    """Load a checkpoint file into ``model`` in place, refusing one saved from another architecture.

    Args:
        model: The model, already initialised (its entries the checkpoint lacks keep that initialisation).
        path: A ``.pth``, ``.pt``, ``.bin``, ``.pth.tar`` or ``.safetensors`` file.
        model_label: How errors name the model (e.g. its timm name).
        select: ``"auto"``, ``"student"`` or ``"ema"``: which weights of the file (see the module docstring).
        strict: Refuse missing and unexpected keys too (a teacher must be complete), instead of warning.
        selected: The state dict already found in ``path`` (saves reading the file twice).

    Returns:
        The file's path and hash, the wrapper key used, and the missing and unexpected keys.

    Raises:
        CheckpointError: The file is missing, of an unsupported type, unreadable, or holds no state dict.
        UnsafeCheckpointError: It pickles a Python global outside the allowlist.
        CheckpointMismatchError: It records another model, shares no entry name with the model, has entries
            whose shapes differ, or (``strict``) misses or adds entries.

    Warns:
        CheckpointKeysWarning: Some keys were missing or unexpected (they are also in the result).
    """
    path = _checked_path(path)
    if selected is None:
        selected = select_state_dict(read_checkpoint(path), path, select)
    cfg = getattr(model, "pretrained_cfg", None)
    check_recorded_architecture(
        cfg.get("architecture") if isinstance(cfg, Mapping) else None, selected, path, model_label
    )
    state_dict = selected.state_dict

    model_state = model.state_dict()
    if not _fits(model_state, state_dict):
        filtered = _filter_for(model, state_dict)
        if _fits(model_state, filtered) or len(set(filtered) & set(model_state)) > len(
            set(state_dict) & set(model_state)
        ):
            state_dict = filtered
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
    missing = tuple(k for k in model_state if k not in state_dict)
    unexpected = tuple(k for k in state_dict if k not in model_state)
    if strict and (missing or unexpected):
        raise CheckpointMismatchError(
            f"checkpoint {path} does not fit {model_label}: {len(missing)} missing key(s) {list(missing[:2])}, "
            f"{len(unexpected)} unexpected key(s) {list(unexpected[:2])}; pass the model name it was saved from"
        )
    model.load_state_dict(state_dict, strict=False)
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
        path=str(path),
        sha256=sha256_file(path),
        key=selected.key,
        missing_keys=missing,
        unexpected_keys=unexpected,
        run=selected.run,
    )


def check_recorded_architecture(
    architecture: str | None, selected: SelectedState, path: str | os.PathLike, model_label: str
) -> None:
    """A checkpoint that records its architecture must be loaded into that architecture (checked before a
    run's ``student_kwargs`` are given to another architecture's constructor, and again when loading).

    Raises:
        CheckpointMismatchError: ``architecture`` (a timm name) is not the one the checkpoint records.
    """
    recorded = selected.model_name
    if recorded is None or architecture is None:
        return
    from ._registry import resolve_name

    try:
        recorded_architecture = resolve_name(recorded).timm_name
    except ValueError:  # a name this timm does not know: compare as written
        recorded_architecture = recorded
    if recorded_architecture.split(".")[0] != str(architecture).split(".")[0]:
        raise CheckpointMismatchError(
            f"checkpoint {path} was trained as {recorded}, not {model_label}; pass {recorded} as the model name"
        )
