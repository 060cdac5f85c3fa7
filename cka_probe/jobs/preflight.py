"""Pre-flight: everything a job names, resolved before its first forward pass.

A figure, zoo or identify job names models (aliases, timm names, training checkpoints), checkpoint files and
layer patterns. Each is checked here, all of them before any image is read or any model runs, so that a typo
in the last entry of a long config stops the job at once, with one line, instead of after the others' features
(or, in a zoo, as one failed model among many). Models are built on PyTorch's ``meta`` device (shapes without
storage, no initialisation cost); a checkpoint is read and matched against that model's entries by
:func:`cka_probe.models.load_model`'s own checks; layer patterns are matched against the model's modules by
:func:`cka_probe.capture.select_layers`. Nothing runs forward.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from ..errors import CKAProbeError

__all__ = ["check_model", "check_models"]


def check_model(request, layers: Any = "activations"):
    """Resolve one model as a job names it, without a forward pass.

    Args:
        request: a :class:`~cka_probe.engine.features.ModelRequest`.
        layers: its layer selection (``"activations"``, names or glob patterns).

    Returns:
        The :class:`~cka_probe.models.LoadedModel` built for the check (on the meta device where the model allows;
        its missing and unexpected checkpoint keys are recorded as when it loads for real).

    Raises:
        UnknownModelError: the name is neither an alias nor a timm model (the message suggests close names).
        CheckpointError: the checkpoint is missing or unreadable, or records no model where none is named.
        CheckpointMismatchError: the checkpoint was saved from another architecture, or its entries do not fit.
        LayerSelectionError: a layer pattern matches no module of the model.
    """
    import torch

    from ..capture import select_layers
    from ..capture.selection import DEFAULT_LAYERS

    request.key_record()  # the name resolved, the checkpoint there (the feature cache keys the same record)
    weights = "random" if request.weights == "pretrained" else request.weights  # weights are not read here
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # copies onto meta tensors, and missing keys warned when the model loads
        try:
            with torch.device("meta"):
                loaded = request.load("meta", weights)
        except CKAProbeError:
            raise
        except (RuntimeError, NotImplementedError):  # a model whose constructor needs real tensors
            loaded = request.load("cpu", weights)
    if not (isinstance(layers, str) and layers == DEFAULT_LAYERS):
        select_layers(loaded.model, layers)
    return loaded


def check_models(requests: Iterable, layers: Mapping[str, Any], where: str) -> None:
    """:func:`check_model` for every model of a job, in order; the first problem is one line naming ``where``
    (the config file) and the model's label.

    Args:
        requests: the job's :class:`~cka_probe.engine.features.ModelRequest` entries.
        layers: per model label, its layer selection.
        where: how the message names the job (its config file).

    Raises:
        CKAProbeError: the first problem found, of the type :func:`check_model` raised.
    """
    for request in requests:
        try:
            check_model(request, layers.get(request.display, "activations"))
        except CKAProbeError as exc:
            raise type(exc)(f"{where}: model {request.display}: {exc}") from None
