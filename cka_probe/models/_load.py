"""Load a model by name (or take one given), with its weights, its preprocessing and its provenance."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import timm
import timm.data
import torch
from torch import nn

from .._choices import CHECKPOINT_SELECT, CHECKPOINT_SUFFIXES, MODEL_WEIGHTS
from ..errors import ArgumentError, CheckpointError
from ._checkpoint import (
    LoadedCheckpoint,
    check_recorded_architecture,
    checkpoint_num_classes,
    load_checkpoint,
    read_checkpoint,
    select_state_dict,
)
from ._pretrained import create_pretrained
from ._registry import family_of, resolve_name
from ._run import RunRecord

__all__ = [
    "CHECKPOINT_ATTRIBUTE",
    "MODEL_WEIGHTS",
    "LoadedModel",
    "load_model",
    "model_from_checkpoint",
    "transform_for",
]

#: Attribute :func:`model_from_checkpoint` sets on the module it builds: the :class:`LoadedCheckpoint` it read.
CHECKPOINT_ATTRIBUTE = "cka_probe_checkpoint"


@dataclass(frozen=True, eq=False)
class LoadedModel:
    """A model ready for probing (eval mode, on its device) and everything needed to say what it is.

    Attributes:
        model: The network, in eval mode.
        name: The name as given (an alias, a timm name, or the class name of a module passed in).
        timm_name: The timm model name, or ``None`` for a module that is not a timm model.
        family: ``"cnn"``, ``"vit"``, ``"mlp"``, ``"hybrid"`` or ``"unknown"``.
        weights: ``"pretrained"``, ``"random"``, ``"checkpoint"``, or ``"given"`` for a module passed in as is.
        data_config: timm's data config (input_size, interpolation, mean, std, crop_pct, crop_mode): a
            ``cka-probe train`` checkpoint's own evaluation transform, else the model's timm pretrained config;
            ``input_size`` is the user's where ``img_size`` was given.
        num_prefix_tokens: Class/register tokens ahead of the patch tokens (0 for models without tokens).
        seed: The seed set before the model was built (it decides every randomly initialised entry).
        pretrained_tag: The timm pretrained tag the weights came from (``"pretrained"`` only), else ``None``.
        checkpoint_path: Absolute path of the checkpoint loaded, or ``None``.
        checkpoint_sha256: Its SHA-256, or ``None``.
        checkpoint_key: The wrapper key its state dict was under (``""`` for a bare state dict), or ``None``.
        missing_keys: Model entries the checkpoint did not provide.
        unexpected_keys: Checkpoint entries the model ignored.
        data_config_source: Where ``data_config`` came from: ``"run"`` (the run's own evaluation transform,
            as its checkpoint records it), ``"official run"`` (the transform an official OFA-KD ``train.py``
            run evaluated with, from the arguments its checkpoint keeps) or ``"model"`` (the model's timm
            pretrained config), with
            ``"user img_size over "`` in front where the caller set the input size.
        epoch: Epochs a ``cka-probe train`` checkpoint had trained, else ``None``.
        model_kwargs: Keyword arguments the model was built with besides ``num_classes`` (a run's
            ``student_kwargs``).
    """

    model: nn.Module
    name: str
    timm_name: str | None
    family: str
    weights: str
    data_config: dict[str, Any]
    num_prefix_tokens: int
    seed: int
    pretrained_tag: str | None = None
    checkpoint_path: str | None = None
    checkpoint_sha256: str | None = None
    checkpoint_key: str | None = None
    missing_keys: tuple[str, ...] = field(default=())
    unexpected_keys: tuple[str, ...] = field(default=())
    data_config_source: str = "model"
    epoch: int | None = None
    model_kwargs: dict[str, Any] = field(default_factory=dict)

    def provenance(self) -> dict[str, Any]:
        """A JSON-ready record of the model: names, family, weights and their source, preprocessing, versions."""
        return {
            "name": self.name,
            "timm_name": self.timm_name,
            "family": self.family,
            "weights": self.weights,
            "pretrained_tag": self.pretrained_tag,
            "checkpoint_path": self.checkpoint_path,
            "checkpoint_sha256": self.checkpoint_sha256,
            "checkpoint_key": self.checkpoint_key,
            "missing_keys": list(self.missing_keys),
            "unexpected_keys": list(self.unexpected_keys),
            "seed": self.seed,
            "epoch": self.epoch,
            "model_kwargs": dict(self.model_kwargs),
            "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in self.data_config.items()},
            "data_config_source": self.data_config_source,
            "num_prefix_tokens": self.num_prefix_tokens,
            "timm_version": timm.__version__,
            "torch_version": torch.__version__,
        }


def _seeded(seed: int, build):
    """Run ``build()`` right after ``torch.manual_seed(seed)``, leaving the caller's RNG state as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def load_model(
    name_or_module: str | nn.Module,
    weights: str = "pretrained",
    checkpoint: str | os.PathLike | None = None,
    seed: int = 0,
    device: str | torch.device = "cpu",
    num_classes: int | None = None,
    checkpoint_select: str = "auto",
    img_size: int | None = None,
) -> LoadedModel:
    """Build a model by alias or timm name, or take a module, and ready it for probing.

    Weights:
        * ``"pretrained"``: timm's published weights through the Hugging Face hub cache; when they cannot be
          had, :class:`~cka_probe.errors.WeightsUnavailableError` (never a silent fallback to random).
        * ``"random"``: timm's initialisation right after ``torch.manual_seed(seed)``, so one seed gives one model.
        * a ``checkpoint`` path: the model is built as for ``"random"`` and the checkpoint loaded over it
          (``weights`` is then ignored and recorded as ``"checkpoint"``); entries it lacks keep the seeded values.

    A module passed in keeps its own weights (recorded as ``"given"`` unless a checkpoint is loaded into it,
    or it was built by :func:`model_from_checkpoint`, whose file and hash are then recorded); its family is
    derived from its class when it is a timm model, else ``"unknown"``.

    Training checkpoints: a file written by ``cka-probe train`` (or the official OFA-KD / timm ``train.py``)
    holds the student and, with EMA on, its EMA; ``checkpoint_select`` picks one. The classifier size is
    read from the checkpoint when ``num_classes`` is not given. ``name_or_module`` may also be such a
    checkpoint file itself: the model name it records is built and the file loaded into it. A ``cka-probe
    train`` run is rebuilt as it trained: its ``student_kwargs`` go to ``timm.create_model``, and its own
    evaluation transform (resolution, crop, interpolation, the data set's mean and std) becomes the
    ``data_config`` that :func:`transform_for` follows.

    Args:
        name_or_module: An alias (see :func:`~cka_probe.models.list_models`), a timm name, or an ``nn.Module``.
        weights: ``"pretrained"`` or ``"random"``.
        checkpoint: A ``.pth`` / ``.pt`` / ``.bin`` / ``.pth.tar`` / ``.safetensors`` file to load.
        checkpoint_select: ``"auto"``, ``"student"`` or ``"ema"``: which weights of a training checkpoint
            (``"auto"``: a cka-probe run's student, else the first state dict found).
        seed: Seed set before the model is built (it also decides a pretrained model's re-initialised classifier
            when ``num_classes`` differs from the published one).
        device: Where the model is moved.
        num_classes: Classifier size, when it differs from the model's default (e.g. 100 for CIFAR-100);
            models built by name only. ``None`` with a checkpoint: the checkpoint's classifier size.
        img_size: Input resolution the images are prepared at, over the run's or the model's own
            (``None``: theirs); the rest of the preprocessing stays theirs.

    Returns:
        The :class:`LoadedModel`.

    Raises:
        UnknownModelError: The name is neither an alias nor a timm model.
        WeightsUnavailableError: Pretrained weights were asked for and cannot be had.
        CheckpointError: The checkpoint is missing or unreadable.
        CheckpointMismatchError: The checkpoint belongs to another architecture.
        ValueError: ``weights`` is not one of ``"pretrained"``, ``"random"``, ``"checkpoint"``, or
            ``num_classes`` is given with a module.

    Example:
        >>> loaded = load_model("test_vit", weights="random", seed=0)
        >>> loaded.family, loaded.data_config["input_size"], loaded.num_prefix_tokens, loaded.model.training
        ('vit', (3, 160, 160), 1, False)
    """
    if checkpoint is None and isinstance(name_or_module, (str, os.PathLike)) and _is_checkpoint_file(name_or_module):
        checkpoint = name_or_module
        name_or_module = None
    if weights not in MODEL_WEIGHTS:
        raise ArgumentError(
            f"unknown weights {weights!r}; use one of {', '.join(MODEL_WEIGHTS)} (--weights on the command line)"
        )
    if weights == "checkpoint" and checkpoint is None:
        raise ArgumentError(
            "weights 'checkpoint' needs a checkpoint file: give checkpoint=PATH (--checkpoint-a/-b on the command line)"
        )
    if checkpoint_select not in CHECKPOINT_SELECT:
        raise ArgumentError(
            f"unknown checkpoint_select {checkpoint_select!r}; use one of {', '.join(CHECKPOINT_SELECT)} "
            "(--checkpoint-key-a/-b on the command line)"
        )
    if img_size is not None and (isinstance(img_size, bool) or not isinstance(img_size, int) or img_size < 1):
        raise ArgumentError(
            f"img_size must be a positive number of pixels, got {img_size!r} (--img-size-a/-b on the command line)"
        )
    selected = None
    run_kwargs: dict[str, Any] = {}
    if checkpoint is not None and not isinstance(name_or_module, nn.Module):
        selected = select_state_dict(read_checkpoint(checkpoint), checkpoint, checkpoint_select)
        if name_or_module is None:
            if selected.model_name is None:
                raise CheckpointError(
                    f"checkpoint {checkpoint} does not record its model; name the model and give the file as its checkpoint "
                    "(--checkpoint-a/-b, or checkpoint: in a config's model entry)"
                )
            name_or_module = selected.model_name
        target = resolve_name(name_or_module).timm_name
        check_recorded_architecture(target, selected, checkpoint, target)  # before its kwargs meet another model
        if num_classes is None:
            num_classes = checkpoint_num_classes(selected.state_dict, target)
        if selected.run is not None:
            run_kwargs = dict(selected.run.model_kwargs)
    model_kwargs = {**run_kwargs, **({} if num_classes is None else {"num_classes": num_classes})}

    pretrained_tag = None
    given_checkpoint = None
    if isinstance(name_or_module, nn.Module):
        if num_classes is not None:
            raise ArgumentError(
                "num_classes applies to models built by name (--num-classes-a/-b); reset the module's classifier "
                "yourself (model.reset_classifier(N) on a timm model)"
            )
        model = name_or_module
        name = type(model).__name__
        cfg = getattr(model, "pretrained_cfg", None)
        timm_name = cfg.get("architecture") if isinstance(cfg, dict) else None
        is_timm = type(model).__module__.startswith("timm.models.")
        family = family_of(timm_name) if (timm_name and is_timm) else "unknown"
        given_checkpoint = getattr(model, CHECKPOINT_ATTRIBUTE, None)
        used = "checkpoint" if isinstance(given_checkpoint, LoadedCheckpoint) else "given"
    else:
        spec = resolve_name(name_or_module)
        name, timm_name, family = name_or_module, spec.timm_name, spec.family
        if weights == "pretrained" and checkpoint is None:
            model = _seeded(seed, lambda: create_pretrained(timm_name, **model_kwargs))
            cfg = model.pretrained_cfg
            pretrained_tag = f"{cfg['architecture']}.{cfg['tag']}" if cfg.get("tag") else cfg["architecture"]
            used = "pretrained"
        else:
            model = _seeded(seed, lambda: _create(timm_name, model_kwargs, checkpoint))
            used = "random"

    loaded_checkpoint = given_checkpoint if isinstance(given_checkpoint, LoadedCheckpoint) else None
    if checkpoint is not None:
        loaded_checkpoint = load_checkpoint(
            model,
            checkpoint,
            model_label=timm_name or name,
            select=checkpoint_select,
            selected=selected,
        )
        used = "checkpoint"

    model = model.to(device).eval()
    run = loaded_checkpoint.run if loaded_checkpoint else None
    data_config, data_config_source = _data_config(model, run, img_size)
    return LoadedModel(
        model=model,
        name=name,
        timm_name=timm_name,
        family=family,
        weights=used,
        data_config=data_config,
        num_prefix_tokens=int(getattr(model, "num_prefix_tokens", 0) or 0),
        seed=seed,
        pretrained_tag=pretrained_tag,
        checkpoint_path=loaded_checkpoint.path if loaded_checkpoint else None,
        checkpoint_sha256=loaded_checkpoint.sha256 if loaded_checkpoint else None,
        checkpoint_key=loaded_checkpoint.key if loaded_checkpoint else None,
        missing_keys=loaded_checkpoint.missing_keys if loaded_checkpoint else (),
        unexpected_keys=loaded_checkpoint.unexpected_keys if loaded_checkpoint else (),
        data_config_source=data_config_source,
        epoch=run.epoch if run else None,
        model_kwargs=dict(run.model_kwargs) if run else {},
    )


def _create(timm_name: str, kwargs: dict[str, Any], checkpoint: str | os.PathLike | None) -> nn.Module:
    """``timm.create_model(timm_name, pretrained=False, **kwargs)``; kwargs a checkpoint's run recorded that
    this timm does not take are one :class:`CheckpointError`."""
    try:
        return timm.create_model(timm_name, pretrained=False, **kwargs)
    except TypeError as exc:
        if checkpoint is None:
            raise
        extra = sorted(k for k in kwargs if k != "num_classes")
        raise CheckpointError(
            f"checkpoint {checkpoint} records student_kwargs {extra} that timm {timm.__version__}'s {timm_name} "
            f"does not take ({exc}); use the timm version the run was trained with"
        ) from None


def _data_config(model: nn.Module, run: RunRecord | None, img_size: int | None) -> tuple[dict[str, Any], str]:
    """The model's data config and where it came from: the run's evaluation transform, else timm's pretrained
    config of the model; ``img_size`` replaces the input size of either."""
    if run is not None and run.data_config is not None:
        config, source = dict(run.data_config), run.source
    else:
        config, source = dict(timm.data.resolve_model_data_config(model)), "model"
    if img_size is not None:
        config["input_size"] = (int(config["input_size"][0]), img_size, img_size)
        source = f"user img_size over {source}"
    return config, source


def model_from_checkpoint(
    path: str | os.PathLike,
    name: str | None = None,
    checkpoint_select: str = "auto",
    num_classes: int | None = None,
    seed: int = 0,
    strict: bool = False,
) -> nn.Module:
    """A model built from a checkpoint file, remembering the file: :func:`load_model` records its path and hash.

    Args:
        path: The checkpoint (a ``cka-probe train`` run's, an official OFA-KD / timm one, or a state dict).
        name: Alias or timm name; ``None`` takes the name the checkpoint records.
        checkpoint_select: ``"auto"``, ``"student"`` or ``"ema"``.
        num_classes: Classifier size; ``None`` reads it from the checkpoint.
        seed: Seed of the initialisation of entries the checkpoint lacks.
        strict: Refuse missing or unexpected keys (see :func:`~cka_probe.models.load_checkpoint`).

    Returns:
        The model in train mode on the CPU, with its :class:`LoadedCheckpoint` as ``model.cka_probe_checkpoint``
        (a ``cka-probe train`` run's student is built with the run's ``student_kwargs``).
    """
    selected = select_state_dict(read_checkpoint(path), path, checkpoint_select)
    name = name or selected.model_name
    if name is None:
        raise CheckpointError(f"checkpoint {path} does not record its model; give the model name with it")
    timm_name = resolve_name(name).timm_name
    check_recorded_architecture(timm_name, selected, path, timm_name)
    if num_classes is None:
        num_classes = checkpoint_num_classes(selected.state_dict, timm_name)
    kwargs = dict(selected.run.model_kwargs) if selected.run is not None else {}
    kwargs.update({} if num_classes is None else {"num_classes": num_classes})
    model = _seeded(seed, lambda: _create(timm_name, kwargs, path))
    loaded = load_checkpoint(model, path, model_label=timm_name, strict=strict, selected=selected)
    setattr(model, CHECKPOINT_ATTRIBUTE, loaded)
    return model


def name_and_checkpoint(name_or_path: str, checkpoint: str | os.PathLike | None = None) -> tuple[str, str | None]:
    """Split a model argument that may be a checkpoint file: ``("run/best.pth", None)`` -> ``("deit_tiny_...", "run/best.pth")``.

    A name that is not an existing checkpoint file, or one given with its own checkpoint, comes back as it is.
    The CLI calls this so that ``cka-probe compare run/best.pth teacher`` builds the model the run records.

    Raises:
        CheckpointError: The file records no model name (give the name, and the file as its checkpoint).
    """
    if checkpoint is not None or not _is_checkpoint_file(name_or_path):
        return name_or_path, None if checkpoint is None else str(checkpoint)
    from ._checkpoint import checkpoint_model_name

    return checkpoint_model_name(name_or_path), str(name_or_path)


def _is_checkpoint_file(value: str | os.PathLike) -> bool:
    path = Path(value).expanduser()
    return path.name.endswith(CHECKPOINT_SUFFIXES) and path.is_file()


def transform_for(loaded: LoadedModel) -> Any:
    """The evaluation preprocessing this model was trained with: ``timm.data.create_transform(**data_config)``.

    For a ``cka-probe train`` checkpoint this is the run's own evaluation transform (the one its validation
    used); for any other model, its timm pretrained config's (see :attr:`LoadedModel.data_config`).

    Args:
        loaded: A :class:`LoadedModel` (its ``data_config`` decides input size, interpolation, crop, mean, std).

    Returns:
        A torchvision transform taking a PIL RGB image to a normalised ``(3, H, W)`` float tensor.

    Example:
        >>> from PIL import Image
        >>> transform_for(load_model("test_vit", weights="random"))(Image.new("RGB", (28, 28))).shape
        torch.Size([3, 160, 160])
    """
    return timm.data.create_transform(**loaded.data_config, is_training=False)
