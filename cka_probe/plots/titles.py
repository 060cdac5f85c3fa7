"""What a figure says: titles from a result's provenance (models, weights, images, n) and the axis-label modes.

Pure functions on the metadata dict that :func:`cka_probe.compare` (``models.a/b``, ``data``, ``n``) and the
``figure`` job (``models.<label>``, ``data``, ``n``) store. Nothing here imports matplotlib, so the CLI can
build its ``--labels`` choices from :data:`LABEL_MODES` cheaply.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from .._choices import LABELS
from ..errors import CKAProbeError

__all__ = [
    "B1_DEFAULTS",
    "LABEL_MODES",
    "FigureTitle",
    "check_labels",
    "data_text",
    "figure_title",
    "identify_subtitle",
    "settings_text",
    "weights_text",
]

LABEL_MODES = LABELS
"""Heatmap axis labels (``--labels``): layer names, 1-based layer numbers as in the paper, or names where they fit."""


def check_labels(labels: str) -> str:
    """``labels`` if it is one of :data:`LABEL_MODES`.

    Raises:
        CKAProbeError: any other value (the message names ``--labels`` and its choices).
    """
    if labels not in LABEL_MODES:
        raise CKAProbeError(f"unknown axis labels {labels!r}; use --labels {', '.join(LABEL_MODES)}")
    return labels


@dataclass(frozen=True)
class FigureTitle:
    """A figure's headline (what is compared) and subtitle (weights, data, n)."""

    title: str
    subtitle: str

    def __str__(self) -> str:
        return f"{self.title}\n{self.subtitle}" if self.subtitle else self.title


def _models(metadata: Mapping[str, Any]) -> dict[str, dict]:
    """The per-model records, keyed ``a``/``b`` (compare) or by label (figure); weights filled in from
    the top-level ``weights`` entry where a record lacks them."""
    models = metadata.get("models") or {}
    weights = metadata.get("weights") or {}
    out = {}
    for key, record in models.items():
        record = dict(record) if isinstance(record, Mapping) else {}
        record.setdefault("name", str(key))
        if record.get("weights") is None and key in weights:
            record["weights"] = weights[key]
        out[str(key)] = record
    if not out and weights:  # only the weights were kept
        out = {str(key): {"name": str(key).upper(), "weights": value} for key, value in weights.items()}
    return out


def _weights_phrase(record: Mapping[str, Any], detail: bool) -> str:
    kind = record.get("weights")
    if kind == "random":
        seed = record.get("seed")
        return f"random weights (seed {seed})" if detail and seed is not None else "random weights"
    if kind == "pretrained":
        tag = record.get("pretrained_tag")
        return f"pretrained weights ({tag})" if detail and tag else "pretrained weights"
    if kind == "checkpoint":
        path = record.get("checkpoint_path")
        key = record.get("checkpoint_key")
        if detail and path:
            return f"weights from {PurePath(str(path)).name}" + (f" ({key})" if key else "")
        return "checkpoint weights"
    if kind == "given":
        return "weights of the given module"
    return "unknown weights"


def _weights_short(record: Mapping[str, Any]) -> str:
    """A model's weights in a word or two, for a figure of many models (the detail stays in the JSON)."""
    kind = record.get("weights")
    if kind == "checkpoint" and record.get("checkpoint_path"):
        return PurePath(str(record["checkpoint_path"])).name
    if kind == "random" and record.get("seed") is not None:
        return f"random (seed {record['seed']})"
    return {"random": "random", "pretrained": "pretrained", "given": "given module"}.get(str(kind), "unknown")


def weights_text(metadata: Mapping[str, Any], detail: bool = True) -> str:
    """The weights of every model in one phrase: shared (``"random weights (seed 0)"``), per model for a pair,
    or grouped with counts for more models (``"weights: best.pth ×6, init.pth ×6"``), so that a figure of
    twelve models keeps its subtitle to one line.

    Args:
        metadata: a result's metadata (``models`` records with ``name``, ``weights``, ``seed``,
            ``pretrained_tag``, ``checkpoint_path``; or only ``weights: {a, b}``).
        detail: add the seed, the pretrained tag or the checkpoint's file name.

    >>> weights_text({"models": {"a": {"name": "resnet18", "weights": "random", "seed": 0},
    ...                          "b": {"name": "vit_s", "weights": "random", "seed": 0}}})
    'random weights (seed 0)'
    >>> weights_text({"models": {"a": {"name": "resnet18", "weights": "pretrained"},
    ...                          "b": {"name": "vit_s", "weights": "random", "seed": 1}}}, detail=False)
    'resnet18: pretrained weights; vit_s: random weights'
    >>> weights_text({"models": {f"m{i}": {"weights": "checkpoint", "checkpoint_path": f"run{i}/{f}.pth"}
    ...                          for i, f in enumerate(["best", "best", "init"])}})
    'weights: best.pth ×2, init.pth ×1'
    """
    models = _models(metadata)
    if not models:
        return "unknown weights"
    phrases = {key: _weights_phrase(record, detail) for key, record in models.items()}
    if len(set(phrases.values())) == 1:
        return next(iter(phrases.values()))
    if len(models) > 2:
        counts = Counter(_weights_short(record) if detail else str(record.get("weights")) for record in models.values())
        return "weights: " + ", ".join(f"{short} ×{count}" for short, count in counts.items())
    names = [str(models[key].get("label") or models[key]["name"]) for key in phrases]  # compare's side labels
    labels = names if len(set(names)) == len(names) else [f"{n} ({k.upper()})" for n, k in zip(names, phrases)]
    return "; ".join(f"{label}: {phrase}" for label, phrase in zip(labels, phrases.values()))


B1_DEFAULTS = {"pool": "mean", "estimator": "full", "kernel": "linear", "tokens": "patch", "unbiased": False}
"""The settings of the OFA-KD supplementary's B.1 (linear CKA of spatially averaged features over all n images,
patch tokens): a figure's subtitle names only the settings that differ from them."""

_POOL_WORDS = {"mean": "mean pooling", "max": "max pooling", "flatten": "flattened (no pooling)"}
_POOLING_OPENINGS = {"mean": "mean", "maximum": "max", "none": "flatten"}  # how each recorded description starts


def _pool(metadata: Mapping[str, Any]) -> str | None:
    """The pooling key: ``pool`` where recorded, else read from the ``pooling`` description every result keeps
    (see :func:`cka_probe.engine.estimation.pooling_description`)."""
    if isinstance(metadata.get("pool"), str):
        return metadata["pool"]
    description = metadata.get("pooling")
    if not isinstance(description, str):
        return None
    return _POOLING_OPENINGS.get(description.split(" ", 1)[0].rstrip(":"))


def _tokens(metadata: Mapping[str, Any]) -> dict[str, str]:
    """Token rule per side (``a``/``b`` for compare) or ``{"": rule}`` for a job's one rule."""
    tokens = metadata.get("tokens")
    if isinstance(tokens, str):
        return {"": tokens}
    if isinstance(tokens, Mapping):
        if isinstance(tokens.get("rule"), str):
            return {"": tokens["rule"]}
        return {str(k): str(v.get("rule")) for k, v in tokens.items() if isinstance(v, Mapping) and v.get("rule")}
    return {}


def settings_text(metadata: Mapping[str, Any]) -> str:
    """The settings that change the numbers and differ from B.1's (:data:`B1_DEFAULTS`), briefly; ``""`` for none.

    Read from what the result records: ``pooling`` (or ``pool``), ``estimator`` and ``minibatch_size``,
    ``unbiased``, ``kernel`` and ``sigma_frac``, ``tokens`` (one rule, or one per side of a comparison).

    >>> settings_text({"pooling": "maximum over spatial positions", "estimator": "minibatch", "minibatch_size": 32,
    ...                "unbiased": True, "kernel": "linear", "tokens": "patch"})
    'max pooling · minibatch estimator, batches of 32'
    >>> settings_text({"models": {"a": {"name": "deit_t"}, "b": {"name": "vit_s"}},
    ...                "tokens": {"a": {"rule": "cls"}, "b": {"rule": "all"}}})
    'tokens cls (deit_t), all (vit_s)'
    >>> settings_text({"pooling": "mean over spatial positions", "estimator": "full", "kernel": "linear"})
    ''
    """
    parts = []
    pool = _pool(metadata)
    if pool and pool != B1_DEFAULTS["pool"]:
        parts.append(_POOL_WORDS.get(pool, f"{pool} pooling"))
    estimator = metadata.get("estimator")
    if estimator and estimator != B1_DEFAULTS["estimator"]:
        size = metadata.get("minibatch_size")
        parts.append(f"{estimator} estimator" + (f", batches of {size}" if size else ""))
    elif metadata.get("unbiased"):  # the minibatch estimator is always unbiased: said once, by its name
        parts.append("unbiased HSIC")
    kernel = metadata.get("kernel")
    if kernel and kernel != B1_DEFAULTS["kernel"]:
        sigma = metadata.get("sigma_frac")
        parts.append(f"{kernel} kernel" + (f" (σ {sigma:g} × median)" if sigma not in (None, 1, 1.0) else ""))
    rules = _tokens(metadata)
    if any(rule != B1_DEFAULTS["tokens"] for rule in rules.values()):
        if len(set(rules.values())) == 1:
            parts.append(f"tokens {next(iter(rules.values()))}")
        else:
            models = _models(metadata)
            names = [
                str((models.get(k) or {}).get("label") or (models.get(k) or {}).get("name") or k.upper()) for k in rules
            ]
            if len(set(names)) < len(names):  # one model on both sides: the sides by their letters
                names = [k.upper() for k in rules]
            parts.append("tokens " + ", ".join(f"{rule} ({name})" for rule, name in zip(rules.values(), names)))
    return " · ".join(parts)


def data_text(metadata: Mapping[str, Any]) -> str:
    """The probe images in a few words: the source's description without its parenthesised details.

    >>> data_text({"data": {"source": "synthetic images (seed 0; generated colour fields)", "synthetic": True}})
    'synthetic images'
    >>> data_text({"data": {"source": "Fashion-MNIST test split (/usr/share/fashion-mnist)"}})
    'Fashion-MNIST test split'
    """
    data = metadata.get("data") or {}
    source = str(data.get("source") or data.get("kind") or "unknown images")
    short = source.split(" (", 1)[0].strip() or source
    if data.get("synthetic") and "synthetic" not in short.lower():
        short += " (synthetic)"
    return short


def figure_title(metadata: Mapping[str, Any], title: str | None = None) -> FigureTitle:
    """Headline and subtitle of a figure from its metadata.

    The headline is ``title`` when given, else ``"A vs B"`` for a pair (``"CKA of k models"`` for more);
    the subtitle names the weights, the probe images and their number, then every setting that changes the
    numbers and differs from B.1's (:func:`settings_text`: pooling, estimator, kernel, tokens).

    >>> meta = {"models": {"a": {"name": "mobilenetv2", "weights": "random", "seed": 0},
    ...                    "b": {"name": "vit_s", "weights": "random", "seed": 0}},
    ...         "data": {"source": "synthetic images (seed 0; colour fields)", "synthetic": True}, "n": 128}
    >>> print(figure_title(meta))
    mobilenetv2 vs vit_s
    random weights (seed 0) · synthetic images · n=128
    """
    models = _models(metadata)
    if title is None:
        names = [str(record["name"]) for record in models.values()]
        if len(names) == 2:
            title = f"{names[0]} vs {names[1]}"
        elif names:
            title = f"CKA of {len(names)} models"
        else:
            title = "CKA"
    n = metadata.get("n", (metadata.get("data") or {}).get("n"))
    parts = [weights_text(metadata), data_text(metadata), f"n={n if n is not None else '?'}", settings_text(metadata)]
    return FigureTitle(title=title, subtitle=" · ".join(part for part in parts if part))


def identify_subtitle(metadata: Mapping[str, Any], width: int = 90) -> str:
    """The identification figure's subtitle: the probe images, n, the checkpoints compared (by their labels,
    the first and last where all of them would take more than ``width`` characters) and the settings that differ
    from B.1's.

    >>> identify_subtitle({"data": {"source": "synthetic images (seed 0)", "synthetic": True}, "n": 8,
    ...                    "networks": [{"label": "seed0/best.pth"}, {"label": "seed1/best.pth"}]})
    'synthetic images · n=8 · checkpoints seed0/best.pth, seed1/best.pth'
    >>> identify_subtitle({"n": 8, "networks": [{"label": f"seed{i}/best.pth"} for i in range(9)]})
    'unknown images · n=8 · 9 checkpoints seed0/best.pth, …, seed8/best.pth'
    """
    labels = [str(net.get("label")) for net in metadata.get("networks") or [] if isinstance(net, Mapping)]
    names = ", ".join(labels)
    if len(names) > width and len(labels) > 2:
        names = f"{len(labels)} checkpoints {labels[0]}, …, {labels[-1]}"
    elif labels:
        names = f"checkpoints {names}"
    n = metadata.get("n", (metadata.get("data") or {}).get("n"))
    parts = [data_text(metadata), f"n={n if n is not None else '?'}", names, settings_text(metadata)]
    return " · ".join(part for part in parts if part)
