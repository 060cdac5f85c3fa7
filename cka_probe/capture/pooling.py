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
* ``pool="flatten"`` keeps every position: the feature of one example is its whole activation
  flattened (``C*H*W`` for maps, in channels-first order whatever the layout, ``T*C`` for tokens,
  the token rule above still applying). The recorder never holds these ``(N, D)`` features: the
  hook reduces them at once to the ``(N, N)`` float64 linear Gram of the batch's centred features
  (:func:`flattened_gram`), the statistic every linear-CKA estimator needs, and drops the
  activation. :func:`flatten_activation` gives the features themselves, for small inputs and
  references.
"""

from __future__ import annotations

import torch

from .._choices import POOLS, PRECISIONS, TOKENS
from ..errors import ArgumentError, ShapeError
from ..math.kernels import FLOAT32_BLOCK, center_features_, full_precision_matmul, mean_left_matters, upper_gram_
from .layouts import LAYOUTS, TOKEN_LAYOUT, check_layout_name

__all__ = ["FLATTEN", "flatten_activation", "flattened_gram", "pool_activation"]

FLATTEN = "flatten"

# Elements of one float64 block of columns in flattened_gram: 2**20 * 8 bytes = 8 MiB, whatever
# the activation's size, so the Gram costs one activation (already in memory) plus this block.
_GRAM_BLOCK_ELEMENTS = 1 << 20


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
    if pool == FLATTEN:
        raise ArgumentError(
            'pool_activation pools over positions; for pool="flatten" use flattened_gram or flatten_activation'
        )
    _check_choice("pool", pool, POOLS)
    _check_layout_and_tokens(layout, tokens)
    return _pool(activation, layout, prefix_tokens, tokens, pool)


def _pool(activation: torch.Tensor, layout: str, prefix_tokens: int, tokens: str, pool: str) -> torch.Tensor:
    """:func:`pool_activation` on settings checked once by the caller (the recorder, per hook call)."""
    activation = _select_tokens(activation, layout, prefix_tokens, tokens)
    spatial_dims = LAYOUTS[layout][1]
    if layout == TOKEN_LAYOUT and prefix_tokens > 0 and tokens == "cls":
        return activation.to(torch.float32, copy=True)
    if not spatial_dims:
        return activation.to(torch.float32, copy=True)
    with torch.autocast(activation.device.type, enabled=False):
        if pool == "mean":
            return activation.mean(dim=spatial_dims, dtype=torch.float32)
        return activation.amax(dim=spatial_dims).to(torch.float32)


def flatten_activation(
    activation: torch.Tensor, layout: str, prefix_tokens: int = 0, tokens: str = "patch"
) -> torch.Tensor:
    """The un-pooled features of ``activation``: ``(N, D)``, every position kept, in channels-first order.

    ``D`` is ``C*H*W`` for ``NCHW`` and ``NHWC`` alike (a channels-last map is permuted to channels
    first before flattening, so the feature does not depend on the layout), ``C*L`` for ``NCL`` and
    ``T*C`` for ``NLC`` tokens after the token rule (``"patch"`` drops the prefix tokens, ``"all"``
    keeps them, ``"cls"`` is the class token alone, ``D = C``). The dtype is the activation's; the
    result may share its storage.

    Raises:
        ShapeError: the rank does not fit the layout, or no patch token is left after the prefix.

    Example:
        >>> import torch
        >>> x = torch.arange(8.0).reshape(1, 2, 2, 2)  # one NHWC map: H=2, W=2, C=2
        >>> flatten_activation(x, "NHWC").tolist()  # channel 0's positions, then channel 1's
        [[0.0, 2.0, 4.0, 6.0, 1.0, 3.0, 5.0, 7.0]]
    """
    _check_layout_and_tokens(layout, tokens)
    activation = _select_tokens(activation, layout, prefix_tokens, tokens)
    if activation.ndim == 2:
        return activation
    channel_dim = LAYOUTS[layout][0]
    if layout != TOKEN_LAYOUT and channel_dim != 1:
        activation = activation.movedim(channel_dim, 1)
    return activation.reshape(activation.shape[0], -1)


def flattened_gram(
    activation: torch.Tensor,
    layout: str,
    prefix_tokens: int = 0,
    tokens: str = "patch",
    precision: str = "float64",
) -> tuple[torch.Tensor, int]:
    """Linear Gram of the batch's centred, flattened features, without forming them in float64.

    With ``X`` the ``(N, D)`` features of :func:`flatten_activation` and ``X_c = X - 1 mean(X)^T``
    (each feature centred over the batch), the result is ``K = X_c X_c^T`` in float64: the linear
    kernel matrix of Kornblith et al. (ICML 2019, eq. 1), already double-centred (``H K H = K`` for
    ``K`` of centred features). Both the centring and ``X_c X_c^T`` are sums over features, so
    they are formed over blocks of columns of the activation as it lies in memory, each block
    converted to float64 on its own (8 MiB): the extra memory does not grow with ``D``. Each block adds
    the upper triangle of its product (:func:`~cka_probe.math.kernels.upper_gram_`: BLAS's symmetric
    rank-k update with one torch thread), and the Gram is mirrored once at the end.
    A feature order is irrelevant to ``K``, so a channels-last activation is never copied to
    channels-first order for it.

    Args:
        activation: a batch-first tensor of the rank ``layout`` names.
        layout: a key of :data:`~cka_probe.capture.layouts.LAYOUTS`.
        prefix_tokens: leading non-patch tokens of an ``NLC`` activation.
        tokens: ``"patch"``, ``"all"`` or ``"cls"``, as in :func:`flatten_activation`.
        precision: ``"float64"`` (default): blocks converted to float64, products in float64.
            ``"float32"``: blocks of at most 4096 columns centred in float32 as they are copied (a second
            time on the CPU where float32 rounding could leave a mean that matters,
            :func:`~cka_probe.math.kernels.mean_left_matters`, and always on other devices) and multiplied
            in float32, their sums added up in float64: faster (``benchmarks/README.md``), within 1e-6 of float64
            relative to the largest entry
            (the ``--precision float32`` option of the CKA engine, carried to the Grams of flattened layers).

    Returns:
        ``(K, D)``: the ``(N, N)`` Gram (float64 storage) on the activation's device, and the flattened width.

    Example:
        >>> import torch
        >>> x = torch.tensor([[[[1.0, 2.0]]], [[[3.0, 6.0]]]])  # two 1x1x2 NCHW maps
        >>> gram, width = flattened_gram(x, "NCHW")
        >>> gram.tolist(), width  # centred rows: [-1, -2] and [1, 2]
        ([[5.0, -5.0], [-5.0, 5.0]], 2)
    """
    _check_choice("precision", precision, PRECISIONS)
    _check_layout_and_tokens(layout, tokens)
    return _gram(activation, layout, prefix_tokens, tokens, precision)


def _gram(
    activation: torch.Tensor, layout: str, prefix_tokens: int, tokens: str, precision: str
) -> tuple[torch.Tensor, int]:
    """:func:`flattened_gram` on settings checked once by the caller (the recorder, per hook call)."""
    rows = _rows_in_memory_order(_select_tokens(activation, layout, prefix_tokens, tokens))
    n, width = rows.shape
    single = precision == "float32"
    block = max(1, _GRAM_BLOCK_ELEMENTS // max(n, 1))
    if single:
        block = min(block, FLOAT32_BLOCK)
    device = rows.device
    with torch.autocast(device.type, enabled=False), full_precision_matmul():
        gram = torch.zeros(n, n, dtype=torch.float64, device=device)
        part = torch.zeros(n, n, dtype=torch.float32, device=device) if single else None
        buffer = torch.empty(n * min(block, width), dtype=torch.float32 if single else torch.float64, device=device)
        averaging = torch.full((1, n), 1.0 / n, dtype=torch.float32, device=device) if single else None
        for start in range(0, width, block):
            columns = rows[:, start : start + block]
            centred = buffer[: columns.numel()].view(columns.shape)
            if part is None:
                center_features_(centred.copy_(columns))
                upper_gram_(centred, gram, accumulate=True)
                continue
            if columns.dtype == torch.float32:  # copied and centred in one pass
                mean = averaging @ columns
                torch.sub(columns, mean, out=centred)
            else:  # narrower: widened exactly first
                mean = averaging @ centred.copy_(columns)
                centred.sub_(mean)
            if device.type != "cpu":  # the second pass always: the rule would wait on the device every block
                centred.sub_(averaging @ centred)
            upper_gram_(centred, part)
            if device.type == "cpu":
                mean_squares = n * float(mean.square().sum(dtype=torch.float64))
                if mean_left_matters(mean_squares, float(part.diagonal().sum(dtype=torch.float64))):
                    centred.sub_(averaging @ centred)
                    upper_gram_(centred, part)
            gram += part  # the block's float32 sum goes to float64
    return gram.triu() + gram.triu(1).T, width


def _select_tokens(activation: torch.Tensor, layout: str, prefix_tokens: int, tokens: str) -> torch.Tensor:
    """Check the rank against the layout and apply the token rule; detached, positions kept."""
    spatial_dims = LAYOUTS[layout][1]
    if activation.ndim != len(spatial_dims) + 2:
        raise ShapeError(
            f"a {layout} activation must be {len(spatial_dims) + 2}-D, got shape {tuple(activation.shape)}; "
            "check the layout"
        )
    activation = activation.detach()
    if layout == TOKEN_LAYOUT and prefix_tokens > 0:
        if tokens == "cls":
            return activation[:, 0]
        if tokens == "patch":
            if activation.shape[1] <= prefix_tokens:
                raise ShapeError(
                    f"{activation.shape[1]} tokens hold no patch token after {prefix_tokens} prefix tokens; "
                    'pass tokens="all" or a layouts= override for this layer'
                )
            activation = activation[:, prefix_tokens:]
    return activation


def _rows_in_memory_order(activation: torch.Tensor) -> torch.Tensor:
    """``(N, D)`` rows of a batch-first tensor, its non-batch axes in the order they lie in memory.

    A view whenever the non-batch axes are dense in some order (contiguous and channels-last
    tensors, token slices); otherwise a copy.
    """
    if activation.ndim <= 2:
        return activation.reshape(activation.shape[0], -1)
    order = sorted(range(1, activation.ndim), key=lambda d: -activation.stride(d))
    return activation.permute(0, *order).reshape(activation.shape[0], -1)


def _check_layout_and_tokens(layout: str, tokens: str) -> None:
    check_layout_name(layout)
    _check_choice("tokens", tokens, TOKENS)


def _check_choice(argname: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ArgumentError(f"unknown {argname} {value!r}; choose --{argname} {', '.join(choices)}")
