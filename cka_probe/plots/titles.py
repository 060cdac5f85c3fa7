"""What a figure says: titles from a result's provenance (models, weights, images, n) and the axis-label modes.

Pure functions on the metadata dict that :func:`cka_probe.compare` (``models.a/b``, ``data``, ``n``) and the
``figure`` job (``models.<label>``, ``data``, ``n``) store. Nothing here imports matplotlib, so the CLI can
build its ``--labels`` choices from :data:`LABEL_MODES` cheaply.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from .._choices import LABELS
from ..errors import CKAProbeError

__all__ = ["LABEL_MODES", "FigureTitle", "check_labels", "data_text", "figure_title", "weights_text"]

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


def weights_text(metadata: Mapping[str, Any], detail: bool = True) -> str:
    """The weights of every model in one phrase: shared (``"random weights (seed 0)"``) or per model.

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
    """
    models = _models(metadata)
    if not models:
        return "unknown weights"
    phrases = {key: _weights_phrase(record, detail) for key, record in models.items()}
    if len(set(phrases.values())) == 1:
        return next(iter(phrases.values()))
    names = [str(models[key].get("label") or models[key]["name"]) for key in phrases]  # compare's side labels
    labels = names if len(set(names)) == len(names) else [f"{n} ({k.upper()})" for n, k in zip(names, phrases)]
    return "; ".join(f"{label}: {phrase}" for label, phrase in zip(labels, phrases.values()))


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
    the subtitle names the weights, the probe images and their number, and the kernel when it is not linear.

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
    parts = [weights_text(metadata), data_text(metadata), f"n={n if n is not None else '?'}"]
    kernel = metadata.get("kernel")
    if kernel and kernel != "linear":
        parts.append(f"{kernel} kernel")
    return FigureTitle(title=title, subtitle=" · ".join(parts))
