"""What ``cka-probe layers`` shows: the layers a comparison would record, without recording features."""

from __future__ import annotations

from typing import Any

import torch

from ..capture import describe_layers

__all__ = ["describe_model_layers"]


def describe_model_layers(
    model: str | torch.nn.Module,
    layers: Any = "activations",
    tokens: str = "patch",
    pool: str = "mean",
    layouts: Any = None,
    img_size: int | None = None,
) -> list[dict]:
    """Layers of ``model`` in forward order, with type, layout, output shape (batch dim dropped) and the
    width of the feature CKA sees: channels when pooled, the whole flattened activation with ``pool="flatten"``.

    The model is built with random weights (the layer set does not depend on them) and run once on a
    blank image of its own input size: a ``cka-probe train`` checkpoint (``model`` may be one) is built as
    the run trained it, with its weights, at the run's own resolution; ``img_size`` sets another.
    """
    from ..models import load_model

    loaded = load_model(model, weights="random", seed=0, device="cpu", img_size=img_size)
    example = torch.zeros(1, *loaded.data_config["input_size"])
    infos = describe_layers(loaded.model.eval(), example, layers=layers, pool=pool, tokens=tokens, layouts=layouts)
    return [
        {
            "name": info.name,
            "type": info.module_type.rsplit(".", 1)[-1],
            "module_type": info.module_type,
            "layout": info.layout,
            "layout_rule": info.layout_source,
            "output": list(info.raw_shape[1:]),
            "pooled_dim": info.pooled_dim,
        }
        for info in infos
    ]
