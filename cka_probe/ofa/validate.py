"""Evaluate a checkpoint on a validation set: a ``cka-probe train`` run's student or EMA, an official OFA-KD /
timm ``train.py`` checkpoint, or a teacher's state dict.

The data and its preprocessing: a run's checkpoint carries its recipe, so its student is rebuilt with its
``student_kwargs`` and its own evaluation transform is used, read as every reader of a run reads it
(:func:`cka_probe.models.load_model`: the data config the run recorded; ``data_dir``, ``dataset`` and
``img_size`` may be overridden). An official OFA-KD ``train.py`` checkpoint is evaluated as its run was
(:func:`~cka_probe.models._official_data.official_run_settings`: its data set, timm 0.6.5's data config of
its student, its own ``--img-size``, ``--crop-pct`` and ``--interpolation``), as every reader of it does. Any other checkpoint is evaluated with the model's own
timm pretrained config (resolution, crop fraction, crop mode, interpolation) and the data set's mean/std.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from torch.utils.data import DataLoader

from .._device import resolve_device
from ..errors import ConfigError
from ..models import eval_data_config, load_model, model_from_checkpoint, read_checkpoint, select_state_dict
from ..models._checkpoint import TRAINING_CHECKPOINT_FORMAT
from ..models._run import EVAL_KEYS
from .config import TrainConfig
from .data import build_dataset
from .distributed import default_workers
from .trainer import evaluate_model

__all__ = ["validate_checkpoint"]


def validate_checkpoint(
    path: str | os.PathLike,
    data_dir: str | None = None,
    dataset: str | None = None,
    model: str | None = None,
    checkpoint_select: str = "auto",
    num_classes: int | None = None,
    batch_size: int = 128,
    device: str = "auto",
    workers: int | None = None,
    samples: int | None = None,
    img_size: int | None = None,
) -> dict[str, Any]:
    """Top-1 / top-5 accuracy and cross-entropy of a checkpoint's model on a validation set.

    Args:
        path: The checkpoint.
        data_dir: Folder of the data (a run's own ``data_dir`` when ``None``).
        dataset: ``imagenet``, ``cifar100`` or ``fashion_mnist`` (a run's own, else ``imagenet``, when ``None``).
        model: Alias or timm name; ``None`` takes the name the checkpoint records.
        checkpoint_select: ``"auto"``, ``"student"`` or ``"ema"``.
        num_classes: Classifier size; ``None`` reads it from the checkpoint.
        batch_size: Images per forward pass.
        device: ``auto``, ``cpu``, ``mps``, ``cuda`` or ``cuda:N``.
        workers: Data-loading processes (``None``: the CPU cores available).
        samples: Evaluate a fixed subset of this many images.
        img_size: Resolution (``None``: the run's, or the model's pretrained config's).

    Returns:
        ``{"model", "checkpoint", "checkpoint_key", "dataset", "data_config", "loss", "top1", "top5", "n"}``
        (``data_config``: the timm data config of the evaluation transform).
    """
    raw = read_checkpoint(path)
    selected = select_state_dict(raw, path, checkpoint_select)
    name = model or selected.model_name
    if name is None:
        raise ConfigError(f"checkpoint {path} does not record its model; give it with --model")
    network = model_from_checkpoint(
        path, name=name, checkpoint_select=checkpoint_select, num_classes=num_classes, strict=True
    )
    is_run = raw.get("format") == TRAINING_CHECKPOINT_FORMAT
    if is_run:
        values = dict(raw["config"])
        values.update({"student": name, "num_classes": int(network.num_classes)})
    else:
        values = {"student": name, "eval_preprocessing": "student", "num_classes": int(network.num_classes)}
        values["img_size"] = int(network.pretrained_cfg.get("input_size", (3, 224, 224))[-1])
        values["dataset"] = "imagenet"
        if selected.run is not None:  # an official OFA-KD train.py run: its data set, as its args say
            from ..models._official_data import official_run_settings

            values.update(official_run_settings(raw.get("args"), name) or {})
    for key, value in (("data_dir", data_dir), ("dataset", dataset), ("img_size", img_size), ("val_samples", samples)):
        if value is not None:
            values[key] = value
    values.update({"method": "scratch", "teacher": None, "teacher_checkpoint": None, "batch_size": batch_size})
    values.update({"output_dir": str(Path(path).parent), "device": device})
    config = TrainConfig.from_dict(values, source=f"checkpoint {path}")
    if selected.run is not None:  # the run's own transform, as compare and the other readers of a run take it
        data_config = load_model(network, img_size=img_size).data_config
    else:
        data_config = eval_data_config(**{key: getattr(config, key) for key in EVAL_KEYS})
    from timm.data import create_transform

    transform = create_transform(**data_config, is_training=False)
    val_set = build_dataset(config, train=False, transform=transform)
    target_device = resolve_device(device)
    loader = DataLoader(
        val_set,
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers if workers is not None else default_workers(),
        pin_memory=target_device.type == "cuda",
    )
    metrics = evaluate_model(network.to(target_device), loader, target_device, num_classes=int(network.num_classes))
    return {
        "model": name,
        "checkpoint": str(Path(path)),
        "checkpoint_key": selected.key,
        "dataset": config.dataset,
        "data_config": {k: list(v) if isinstance(v, tuple) else v for k, v in data_config.items()},
        **metrics,
    }
