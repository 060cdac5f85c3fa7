"""One place where recorded features become CKA tables, for every command.

``compare``, ``figure`` and ``zoo`` (and the feature cache behind them) all call :func:`pair_tables`
with one :class:`CKASettings`, so one pair of models gives one table whatever the path. The settings
that change a number (kernel, HSIC estimator, full or minibatch estimator and its batch size, RBF
bandwidth) are recorded in every output through :meth:`CKASettings.record`.

Estimators:

* ``full`` (the default, and the paper's): CKA over all n images at once (Kornblith et al. 2019).
  Forward batching does not change it: the pooled features of every batch are concatenated first.
* ``minibatch``: Nguyen, Raghu & Kornblith (2021), the unbiased HSIC of each batch of ``batch_size``
  images averaged over batches, then normalised. It is a different estimator (it converges to the
  population CKA, not to the full-batch value) and is used only when asked for.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .._choices import ESTIMATORS, KERNELS, PRECISIONS
from ..errors import ConfigError, ShapeError
from .spool import SpooledGrams

__all__ = [
    "CKASettings",
    "FLAGS",
    "JOB_KEYS",
    "SettingNames",
    "check_pooling",
    "math_input",
    "pair_tables",
    "minibatch_bounds",
    "pooling_description",
    "recorded_to",
    "LAYER_SEPARATOR",
]

LAYER_SEPARATOR = ": "  # joins model label and layer name in the combined stack (warnings name layers this way)
MIN_BATCH = 4  # the unbiased HSIC needs 4 examples

_POOLING = {
    "mean": "mean over spatial positions (H, W), tokens, or the Mixer token-mixing axis; channels kept",
    "max": "maximum over spatial positions (H, W), tokens, or the Mixer token-mixing axis; channels kept",
    "flatten": "none: the whole activation flattened per image (C*H*W, or tokens x channels)",
}


def pooling_description(pool: str) -> str:
    """How features were reduced before CKA, as recorded in every output's provenance."""
    return _POOLING[pool]


@dataclass(frozen=True)
class SettingNames:
    """How the caller spells each setting, so that a check's message names the fix in the caller's terms: the
    command-line options (:data:`FLAGS`) or a job file's keys (:data:`JOB_KEYS`).

    Example:
        >>> FLAGS.set("estimator", "full"), JOB_KEYS.set("estimator", "full"), JOB_KEYS.set("n")
        ('--estimator full', 'analysis.estimator: full', 'data.n')
    """

    names: Mapping[str, str]

    def set(self, key: str, value: Any = None) -> str:
        """The setting ``key`` (set to ``value``, when given) as the caller writes it."""
        name = self.names[key]
        if value is None:
            return name
        return f"{name} {value}" if name.startswith("-") else f"{name}: {value}"


FLAGS = SettingNames(
    {
        "kernel": "--kernel",
        "estimator": "--estimator",
        "precision": "--precision",
        "unbiased": "--unbiased",
        "sigma_frac": "the RBF bandwidth fraction",
        "batch_size": "--batch-size",
        "n": "-n",
        "pool": "--pool",
    }
)
"""The command-line options of compare and identify (and the keywords of their Python calls)."""

JOB_KEYS = SettingNames(
    {
        "kernel": "analysis.kernel",
        "estimator": "analysis.estimator",
        "precision": "analysis.precision",
        "unbiased": "analysis.unbiased",
        "sigma_frac": "analysis.sigma_frac",
        "batch_size": "data.batch_size",
        "n": "data.n",
        "pool": "analysis.pool",
    }
)
"""The keys of figure, zoo and identify job files (``analysis.pools`` is identify's ``analysis.pool``)."""


@dataclass(frozen=True)
class CKASettings:
    """How CKA numbers are computed from recorded features.

    Attributes:
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: unbiased HSIC (Song et al. 2012) with the full estimator; the minibatch estimator
            always uses it.
        sigma_frac: RBF bandwidth as a fraction of the median distance.
        estimator: ``"full"`` or ``"minibatch"``.
        batch_size: images per minibatch of the minibatch estimator (``None``: all n in one batch);
            the full estimator does not depend on it.
        precision: ``"float64"`` or ``"float32"`` arithmetic of the full estimator: the Grams (those of
            flattened layers are formed while recording, so the precision is part of their feature settings)
            and the all-pairs product.
    """

    kernel: str = "linear"
    unbiased: bool = False
    sigma_frac: float = 1.0
    estimator: str = "full"
    batch_size: int | None = None
    precision: str = "float64"

    def check(self, n: int | None = None, names: SettingNames = FLAGS) -> CKASettings:
        """Refuse settings that cannot give a number, before any model runs; returns ``self``.

        The one check of these settings on every path (compare, identify, figure and zoo files); ``names``
        spells the fix in the caller's terms. Inner layers trust settings that passed it.
        """
        say = names.set
        if self.kernel not in KERNELS:
            raise ConfigError(f"unknown kernel {self.kernel!r}; choose {say('kernel')} {' or '.join(KERNELS)}")
        if self.estimator not in ESTIMATORS:
            raise ConfigError(
                f"unknown estimator {self.estimator!r}; choose {say('estimator')} {' or '.join(ESTIMATORS)}"
            )
        if self.precision not in PRECISIONS:
            raise ConfigError(
                f"unknown precision {self.precision!r}; choose {say('precision')} {' or '.join(PRECISIONS)}"
            )
        if self.precision != "float64" and self.estimator != "full":
            raise ConfigError(
                f"{say('precision', self.precision)} applies to the full estimator; use {say('estimator', 'full')} "
                f"or {say('precision', 'float64')}"
            )
        if not self.sigma_frac > 0:
            raise ConfigError(f"{say('sigma_frac')} must be positive, got {self.sigma_frac}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"{say('batch_size')} must be a positive number of images, got {self.batch_size}")
        if n is not None:
            if n < 2:
                raise ShapeError(f"n={n} images cannot give a CKA; use {say('n', 2)} or more (128 as in the paper)")
            if self.uses_unbiased and n < MIN_BATCH:
                fix = f"drop {say('unbiased')}" if self.estimator == "full" else f"use {say('estimator', 'full')}"
                raise ShapeError(f"the unbiased estimator needs n >= 4 images, got n={n}; raise {say('n')} or {fix}")
        if self.estimator == "minibatch" and self.batch_size is not None and self.batch_size < MIN_BATCH:
            raise ShapeError(
                f"the minibatch estimator needs batches of 4 or more images, got {say('batch_size', self.batch_size)}"
            )
        return self

    @property
    def uses_unbiased(self) -> bool:
        return self.unbiased or self.estimator == "minibatch"

    def description(self) -> str:
        """One sentence naming the estimator and its papers."""
        kernel = "linear" if self.kernel == "linear" else f"RBF (bandwidth {self.sigma_frac:g} x median distance)"
        if self.estimator == "minibatch":
            size = f"batches of {self.batch_size}" if self.batch_size else "one batch of all n"
            return (
                f"minibatch {kernel} CKA (Nguyen et al. 2021): unbiased HSIC (Song et al. 2012) averaged "
                f"over {size} images, then normalised"
            )
        hsic = "unbiased HSIC (Song et al. 2012)" if self.unbiased else "biased HSIC (Gretton et al. 2005)"
        arithmetic = "" if self.precision == "float64" else ", Grams and all-pairs product in float32"
        return f"{kernel} CKA (Kornblith et al. 2019) over all n images at once, {hsic}{arithmetic}"

    def record(self) -> dict[str, Any]:
        """What goes into every output's provenance."""
        return {
            "kernel": self.kernel,
            "sigma_frac": self.sigma_frac if self.kernel == "rbf" else None,
            "unbiased": self.uses_unbiased,
            "estimator": self.estimator,
            "minibatch_size": self.batch_size if self.estimator == "minibatch" else None,
            "precision": self.precision,
            "estimator_description": self.description(),
        }


def number_formats(pools: Sequence[str], precision: str) -> str:
    """The number formats behind a table, for its provenance (``dtype``): recorded features, the Grams of flattened
    layers, and the CKA engine, whose values are always stored in float64.

    >>> number_formats(["mean"], "float64")
    'pooled features float32, CKA float64'
    >>> number_formats(["mean", "flatten"], "float32")
    'pooled features float32, flattened Grams float32 (summed in float64), CKA Grams and products float32, values float64'
    """
    parts = []
    if any(pool != "flatten" for pool in pools):
        parts.append("pooled features float32")
    if "flatten" in pools:
        parts.append(
            "flattened Grams float64" if precision == "float64" else "flattened Grams float32 (summed in float64)"
        )
    parts.append("CKA float64" if precision == "float64" else "CKA Grams and products float32, values float64")
    return ", ".join(parts)


def check_pooling(pool: str, settings: CKASettings, n: int | None, names: SettingNames = FLAGS) -> None:
    """Refuse a pooling that the estimator cannot use, before any model runs (``names``: as in
    :meth:`CKASettings.check`).

    Flattened features are kept as one Gram per forward batch, never as features, so the full
    estimator needs all n images in one batch (the Gram of all n); over several batches only the
    minibatch estimator is defined. (An exact full-n estimator across batches would need every
    cross-batch block of the n x n Gram, i.e. every activation at once: cka-probe does not offer it.)
    """
    if pool != "flatten" or settings.estimator != "full":
        return
    if settings.batch_size is not None and n is not None and settings.batch_size < n:
        say = names.set
        raise ConfigError(
            f"{say('pool', 'flatten')} with {say('estimator', 'full')} needs all n={n} images in one forward batch, "
            f"got {say('batch_size', settings.batch_size)}; drop {say('batch_size')} (memory grows with n^2 only), "
            f"or use {say('estimator', 'minibatch')}"
        )


def math_input(value: torch.Tensor | list[torch.Tensor], name: str = "layer"):
    """What the math takes for one recorded layer: its pooled ``(n, d)`` features as they are, or the
    :class:`~cka_probe.math.Gram` of a flattened layer recorded in one batch."""
    from ..math import Gram

    if isinstance(value, torch.Tensor):
        return value
    if len(value) != 1:
        raise ConfigError(
            f"layer {name}: flattened features over {len(value)} batches give only the minibatch estimator; "
            "use --estimator minibatch, or all n images in one batch"
        )
    return Gram(value[0])


def minibatch_bounds(n: int, batch_size: int | None) -> list[tuple[int, int]]:
    """The ``[start, stop)`` ranges of the batches over n images: of the forward passes and of the
    minibatch estimator alike.

    Batches of ``batch_size`` in order; a last batch of fewer than 4 images joins the one before it
    (the unbiased HSIC needs 4).

    >>> minibatch_bounds(10, 4)
    [(0, 4), (4, 10)]
    >>> minibatch_bounds(12, 4)
    [(0, 4), (4, 8), (8, 12)]
    """
    size = batch_size or n
    bounds = []
    start = 0
    while start < n:
        stop = min(start + size, n)
        if 0 < n - stop < MIN_BATCH:
            stop = n
        bounds.append((start, stop))
        start = stop
    return bounds


def pair_tables(
    features: Mapping[str, Mapping[str, torch.Tensor]],
    pairs: Iterable[tuple[str, str]],
    settings: CKASettings,
) -> dict[tuple[str, str], Any]:
    """CKA tables of the given model pairs, every pair from one computation over all involved layers.

    All layers of all models in ``pairs`` are stacked; the full estimator takes one product of their
    centred Grams (:func:`~cka_probe.math.cka_matrix`), the minibatch estimator accumulates one
    :class:`~cka_probe.math.MinibatchCKA` over the stack; each pair's table is a block of the result.

    Args:
        features: per model label, its ``{layer: (n, d) tensor}`` in forward order; a flattened layer is
            a list of per-batch ``(b, b)`` Grams (:class:`~cka_probe.engine.features.ExtractedFeatures`).
        pairs: ``(row model, column model)`` labels; ``(a, a)`` compares a model with itself.
        settings: how to compute.

    Returns:
        ``{(a, b): DataFrame}`` with index = a's layers (named ``a``), columns = b's (named ``b``).
    """
    import pandas as pd

    from ..math import Gram, MinibatchCKA, cka_matrix

    pairs = list(dict.fromkeys(pairs))
    if not pairs:
        return {}
    labels = list(dict.fromkeys(label for pair in pairs for label in pair))
    combined: dict[str, torch.Tensor | list[torch.Tensor]] = {}
    device = None
    for label in labels:
        for layer, value in features[label].items():
            device = device or (value.device if isinstance(value, (torch.Tensor, SpooledGrams)) else value[0].device)
            combined[f"{label}{LAYER_SEPARATOR}{layer}"] = recorded_to(value, device)
    n = sum(_batch_sizes(next(iter(combined.values()))))  # settings were checked where they entered
    if settings.estimator == "full":
        everything = cka_matrix(
            {name: math_input(value, name) for name, value in combined.items()},
            kernel=settings.kernel,
            unbiased=settings.unbiased,
            sigma_frac=settings.sigma_frac,
            dtype=settings.precision,
        )
    else:
        bounds = minibatch_bounds(n, settings.batch_size)
        metric = MinibatchCKA(kernel=settings.kernel, sigma_frac=settings.sigma_frac)
        for k, (start, stop) in enumerate(bounds):
            batch = {}
            for name, value in combined.items():
                if isinstance(value, torch.Tensor):
                    batch[name] = value[start:stop]
                else:
                    if _batch_sizes(value) != [b - a for a, b in bounds]:
                        raise ShapeError(
                            f"layer {name}: its Grams come in batches {_batch_sizes(value)}, not the "
                            f"estimator's {[b - a for a, b in bounds]}; record it with the same --batch-size"
                        )
                    batch[name] = Gram(value[k])
            metric.update(batch)
        everything = metric.compute()
    values = everything.values.cpu().numpy()
    offsets, start = {}, 0
    for label in labels:
        count = len(features[label])
        offsets[label] = (start, start + count)
        start += count
    tables = {}
    for a, b in pairs:
        (ra, rb), (ca, cb) = offsets[a], offsets[b]
        tables[(a, b)] = pd.DataFrame(
            values[ra:rb, ca:cb],
            index=pd.Index(list(features[a]), name=a),
            columns=pd.Index(list(features[b]), name=b),
        )
    return tables


def recorded_to(
    value: torch.Tensor | list[torch.Tensor] | SpooledGrams, device: torch.device | str
) -> torch.Tensor | list[torch.Tensor] | SpooledGrams:
    """One layer's recorded value on ``device``: pooled features, a flattened layer's Grams per batch, or spooled
    Grams (:class:`~cka_probe.engine.spool.SpooledGrams`, which stay on disk and are read onto ``device``)."""
    if isinstance(value, (torch.Tensor, SpooledGrams)):
        return value.to(device)
    return [g.to(device) for g in value]


def _batch_sizes(value: torch.Tensor | list[torch.Tensor] | SpooledGrams) -> list[int]:
    if isinstance(value, SpooledGrams):
        return value.sizes  # without reading them
    return [value.shape[0]] if isinstance(value, torch.Tensor) else [g.shape[0] for g in value]
