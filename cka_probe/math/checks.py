"""Checks and warnings shared by every CKA estimator: argument, shape and finiteness checks, the
constant-layer test and the warnings for layers without a defined CKA.

Constant layers: a layer whose features do not vary over the examples has no defined CKA. One
test serves every estimator (:func:`constant_layers`): with ``V = ||X_c||_F^2 = tr(H K H)``,
the spread of the features around their mean, and ``S = ||X||_F^2 = tr(K)``, their raw size,
a layer is constant when ``V <= 1e-24 S``, i.e. ``||X_c||_F <= 1e-12 ||X||_F``. For a Gram,
``V = sum_ij D_ij / (2n)`` from the squared distances with exact zeros between identical rows, so
a layer of identical rows gives ``V = 0`` whatever rounding the Gram carries. Such a layer's row
or column is NaN and one :class:`ZeroVarianceWarning` names every constant layer.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping, Sequence

import torch

from .._choices import KERNELS, PRECISIONS
from ..errors import KernelError, NonFiniteFeatureError, PrecisionError, ShapeError
from .kernels import Gram

__all__ = ["ZeroVarianceWarning", "constant_layers"]

# One layer: ``(n, d)`` features or their linear Gram.
Layer = torch.Tensor | Gram


# A layer counts as constant when its centred features are this small relative to the raw ones
# (see the module docstring). Features come from float32 (or narrower) activations, whose relative
# resolution is ~6e-8, so any variation they can represent is far above this threshold.
_ZERO_VARIANCE_RTOL = 1e-12


class ZeroVarianceWarning(UserWarning):
    """A layer's features are constant over the examples; its CKA is NaN."""


def constant_layers(variance: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """The one constant-layer test of every estimator: ``V <= rtol^2 S`` with ``rtol = 1e-12``.

    Args:
        variance: ``V = ||X_c||_F^2 = tr(H K H)`` per layer (summed over batches for the
            minibatch estimator).
        scale: ``S = ||X||_F^2 = tr(K)`` per layer (summed likewise).

    Returns:
        Boolean tensor, True for constant layers.
    """
    return variance <= _ZERO_VARIANCE_RTOL**2 * scale


def _nan_with_warning(names: Sequence[str]) -> torch.Tensor:
    _warn_constant(names)
    return torch.tensor(float("nan"), dtype=torch.float64)


def _warn_constant(names: Sequence[str]) -> None:
    _warn_undefined(
        names,
        "features of layer(s) {} are constant over the examples; their CKA is undefined and set to NaN "
        "(check the layer choice or use more varied images)",
    )


def _warn_degenerate(names: Sequence[str]) -> None:
    _warn_undefined(
        names,
        "the centred kernel of layer(s) {} vanishes (for the RBF kernel: more than half of the example pairs "
        "coincide, so the median bandwidth is 0); their CKA is undefined and set to NaN (use more varied images "
        "or --kernel linear)",
    )


def _warn_undefined(names: Sequence[str], message: str) -> None:
    """One :class:`ZeroVarianceWarning` naming each layer once (none for no layer); ``stacklevel`` points at the
    caller of the public function that found them."""
    if names:
        listed = ", ".join(dict.fromkeys(map(str, names)))
        warnings.warn(message.format(listed), ZeroVarianceWarning, stacklevel=4)


def _check_kernel(kernel: str) -> None:
    if kernel not in KERNELS:
        raise KernelError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)} (--kernel)")


def _resolve_dtype(dtype: torch.dtype | str) -> torch.dtype:
    """``torch.float64`` / ``torch.float32`` from a dtype or its name."""
    by_name = {
        "float64": torch.float64,
        "float32": torch.float32,
        torch.float64: torch.float64,
        torch.float32: torch.float32,
    }
    try:
        return by_name[dtype]
    except (KeyError, TypeError):
        raise PrecisionError(f"unknown precision {dtype!r}; choose one of {', '.join(PRECISIONS)}") from None


def _check_finite(finite: torch.Tensor, members: Sequence[int], names: Sequence[str], what: str) -> None:
    if bool(finite.all()):
        return
    name = names[members[int(torch.nonzero(~finite)[0])]]
    raise NonFiniteFeatureError(
        f"layer {name}: {what} contain NaN or infinity; check the model's numerics "
        "(e.g. run without fp16 autocast) or exclude the layer"
    )


def _layer_list(feats, argname: str) -> tuple[list[str], list[Layer]]:
    if isinstance(feats, (torch.Tensor, Gram)):
        raise ShapeError(
            f"{argname} must be a sequence or mapping of (n, d) tensors, got one tensor; wrap it in a list"
        )
    if isinstance(feats, Mapping):
        names, tensors = [str(k) for k in feats], list(feats.values())
    else:
        tensors = list(feats)
        names = [f"{argname}[{i}]" for i in range(len(tensors))]
    if not tensors:
        raise ShapeError(f"{argname} holds no layers; pass at least one (n, d) tensor")
    for name, t in zip(names, tensors):
        _check_features(t, name)
    return names, tensors


def _check_features(t: Layer, name: str) -> None:
    """Type and rank of one layer (finiteness is checked where the layer is read, in one pass)."""
    if isinstance(t, Gram):
        return
    if not isinstance(t, torch.Tensor) or t.ndim != 2:
        shape = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ShapeError(f"layer {name}: features must be a 2-D (n, d) tensor, got {shape}; pool or flatten them first")


def _check_examples(tensors_a, names_a, tensors_b, names_b, unbiased: bool) -> int:
    sizes = {t.shape[0] for t in tensors_a} | {t.shape[0] for t in tensors_b}
    if len(sizes) > 1:
        by_layer = {
            **{n: t.shape[0] for n, t in zip(names_a, tensors_a)},
            **{n: t.shape[0] for n, t in zip(names_b, tensors_b)},
        }
        raise ShapeError(
            f"layers have different numbers of examples {sorted(sizes)} ({_first_mismatch(by_layer)}); "
            "both sides must see the same n images"
        )
    n = sizes.pop()
    min_n = 4 if unbiased else 2
    if n < min_n:
        estimator = "the unbiased estimator" if unbiased else "CKA"
        raise ShapeError(f"{estimator} needs at least {min_n} examples, got n={n}; use more images")
    return n


def _first_mismatch(by_layer: dict[str, int]) -> str:
    items = list(by_layer.items())
    first_name, first_n = items[0]
    for name, n in items[1:]:
        if n != first_n:
            return f"{first_name}: n={first_n}, {name}: n={n}"
    return ""


def _prepare_pair(x: Layer, y: Layer, unbiased: bool) -> tuple[Layer, Layer]:
    _check_features(x, "x")
    _check_features(y, "y")
    _check_examples([x], ["x"], [y], ["y"], unbiased)
    return x, y.to(x.device)


def _check_gram_pair(gram_x: torch.Tensor, gram_y: torch.Tensor, min_n: int) -> int:
    if gram_x.ndim != 2 or gram_x.shape[0] != gram_x.shape[1] or gram_x.shape != gram_y.shape:
        raise ShapeError(
            f"kernel matrices must be square and of one shape, got {tuple(gram_x.shape)} and {tuple(gram_y.shape)}"
        )
    n = gram_x.shape[0]
    if n < min_n:
        raise ShapeError(f"this HSIC estimator needs at least {min_n} examples, got n={n}; use more images")
    return n
