"""Pool one activation to ``(N, C)`` float32 features, given its layout.

Pooling happens inside the forward hook, so a layer costs ``O(N C)`` memory rather than
``O(N C H W)``. The result never shares storage with the activation (an in-place operation later
in the forward cannot change it) and carries no autograd graph.

* ``pool="mean"`` averages over the positions of the layout (``H, W`` of ``NCHW``/``NHWC``, the
  tokens of ``NLC``, ``L`` of ``NCL``), accumulating in float32 whatever the activation's dtype;
  ``pool="max"`` takes the per-channel maximum instead.
* Token layouts (``NLC``) with prefix tokens: ``tokens="patch"`` pools the patch tokens only,
  ``tokens="all"`` pools every token, ``tokens="cls"`` takes the first (class) token as it is.
  Layers without prefix tokens pool all their positions whatever ``tokens`` says.
"""

from __future__ import annotations

import torch

from ..errors import ShapeError
from .layouts import LAYOUTS, TOKEN_LAYOUT, check_layout_name

__all__ = ["POOLS", "TOKENS", "pool_activation"]

POOLS = ("mean", "max")
TOKENS = ("patch", "all", "cls")


def pool_activation(
    activation: torch.Tensor,
    layout: str,
    prefix_tokens: int = 0,
    tokens: str = "patch",
    pool: str = "mean",
) -> torch.Tensor:
    """Pool ``activation`` over its positions: ``(N, C)`` float32, detached, in new storage.

    Args:
        activation: a batch-first tensor of the rank ``layout`` names.
        layout: a key of :data:`~cka_probe.capture.layouts.LAYOUTS` (``"NCHW"``, ``"NLC"``, ...).
        prefix_tokens: leading non-patch tokens of an ``NLC`` activation.
        tokens: ``"patch"``, ``"all"`` or ``"cls"``; used only when ``prefix_tokens > 0``.
        pool: ``"mean"`` or ``"max"``.

    Returns:
        ``(N, C)`` float32 tensor on the activation's device.

    Raises:
        ShapeError: the rank does not fit the layout, or no patch token is left after the prefix.

    Example:
        >>> import torch
        >>> x = torch.arange(12.0).reshape(1, 3, 4)  # one image, 3 tokens (1 prefix), 4 channels
        >>> pool_activation(x, "NLC", prefix_tokens=1).tolist()
        [[6.0, 7.0, 8.0, 9.0]]
        >>> pool_activation(x, "NLC", prefix_tokens=1, tokens="cls").tolist()
        [[0.0, 1.0, 2.0, 3.0]]
    """
    check_layout_name(layout)
    _check_choice("tokens", tokens, TOKENS)
    _check_choice("pool", pool, POOLS)
    spatial_dims = LAYOUTS[layout][1]
    if activation.ndim != len(spatial_dims) + 2:
        raise ShapeError(
            f"a {layout} activation must be {len(spatial_dims) + 2}-D, got shape {tuple(activation.shape)}; "
            "check the layout"
        )
    activation = activation.detach()
    if layout == TOKEN_LAYOUT and prefix_tokens > 0:
        if tokens == "cls":
            return activation[:, 0].to(torch.float32, copy=True)
        if tokens == "patch":
            if activation.shape[1] <= prefix_tokens:
                raise ShapeError(
                    f"{activation.shape[1]} tokens hold no patch token after {prefix_tokens} prefix tokens; "
                    'pass tokens="all" or a layouts= override for this layer'
                )
            activation = activation[:, prefix_tokens:]
    if not spatial_dims:
        return activation.to(torch.float32, copy=True)
    with torch.autocast(activation.device.type, enabled=False):
        if pool == "mean":
            return activation.mean(dim=spatial_dims, dtype=torch.float32)
        return activation.amax(dim=spatial_dims).to(torch.float32)


def _check_choice(argname: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"unknown {argname} {value!r}; choose one of {', '.join(choices)}")
