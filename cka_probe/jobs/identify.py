"""Kornblith et al.'s layer-identification check on the user's own networks: ``identify``.

Kornblith, Norouzi, Lee and Hinton ("Similarity of Neural Network Representations Revisited",
ICML 2019, section 6.1) train networks of one architecture from different seeds and ask, for every
layer of one network, whether the most similar layer of another network is the architecturally
corresponding one. A similarity index that passes this sanity check tells layers apart; one that
fails it cannot be trusted to find correspondences between different networks either. They report
99.3 % for linear CKA on flattened activations of CIFAR-10 networks.

Here the check runs on checkpoints the user gives, for each pooling (by default the spatial mean of
the OFA-KD supplementary, B.1, and the flattened activations of Kornblith et al.), with linear CKA:

* for every ordered pair of networks ``(i, j)``, ``i != j``, and every layer ``l`` of network ``i``,
  the layer counts as identified when ``CKA(i_l, j_l) > CKA(i_l, j_m) + TIE_TOLERANCE`` for every other
  layer ``m`` of network ``j`` (a strict maximum: a tie, for instance with a duplicated layer, is a miss,
  and so is a NaN from a constant layer). Values closer than ``TIE_TOLERANCE = 1e-6`` count as a tie, so
  that two layers with the same features (a global-average-pool output and the spatial mean of the map
  before it) are a miss whichever way float rounding falls, in float64 and float32 alike;
* per layer, the share of the ``K (K - 1)`` ordered pairs that identify it; overall, the share of all
  ``L K (K - 1)`` layer matches.

Estimators: ``full`` is the biased (or, with ``unbiased``, Song et al.'s unbiased) linear CKA over all
n images in one batch; ``minibatch`` is Nguyen, Raghu and Kornblith's (ICLR 2021) estimator over the
recorded batches, ``sum_k HSIC_1(K_k, L_k) / sqrt(sum_k HSIC_1(K_k, K_k) sum_k HSIC_1(L_k, L_k))``.
Flattened features are recorded as one Gram per layer and batch (``pool="flatten"`` of
:class:`~cka_probe.capture.FeatureRecorder`) and enter the math as :class:`~cka_probe.math.Gram`; over several
batches they wait on disk (:class:`~cka_probe.engine.spool.GramSpool`, ``K L n b`` float64 numbers for K
networks, L layers, n images in batches of b) and are read one batch at a time, so memory is ``O(K L b^2)``
whatever the layers' sizes and n; an exact full estimator over several batches would need every cross-batch
product and is not offered.
"""

from __future__ import annotations

import copy
import glob
import json
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from .._choices import CHECKPOINT_SELECT, POOLS
from .._config import parse_overrides, read_yaml, set_dotted, validate
from ..capture import parse_layouts
from ..capture.pooling import FLATTEN
from ..engine._io import atomic_paths, check_outputs, ensure_writable_dir
from ..engine.estimation import (
    FLAGS,
    JOB_KEYS,
    CKASettings,
    SettingNames,
    check_pooling,
    minibatch_bounds,
    number_formats,
    pair_tables,
    pooling_description,
)
from ..engine.features import ModelRequest, extract_poolings, gram_spool, resolve_device
from ..engine.provenance import output_header
from ..errors import CKAProbeError, ConfigError, IdentifyError
from ..math import ZeroVarianceWarning
from .comparison import _tokens
from .preflight import check_model
from .result import _jsonable, output_paths

__all__ = [
    "DEFAULT_POOLS",
    "IdentifyResult",
    "Network",
    "identification_scores",
    "identify",
    "identify_outputs",
    "load_identify_config",
    "resolve_networks",
]

DEFAULT_POOLS = ("mean", FLATTEN)

IDENTIFY_KEYS = SettingNames({**JOB_KEYS.names, "pool": "analysis.pools"})
"""An identify file's keys, for the messages of the checks it shares with compare."""


@dataclass(frozen=True)
class Network:
    """One network of the check: a model name and the checkpoint loaded into it.

    Attributes:
        model: alias or timm name of the architecture.
        checkpoint: the weights file.
        label: how tables call it (default: the checkpoint's file name, with as many of its folders as tell
            same-named files apart: ``seed0/best.pth``).
        layers: the layer selection (``"activations"``, names or glob patterns).
    """

    model: str
    checkpoint: str
    label: str
    layers: Any = "activations"


# --------------------------------------------------------------------------- inputs


def resolve_networks(model: str | None, checkpoints: Sequence[Any], layers: Any = "activations") -> list[Network]:
    """Expand paths, globs and config mappings into :class:`Network` entries, checked for the check's needs.

    Args:
        model: the architecture every entry uses unless it names its own (``{checkpoint, model}``); ``None``:
            the one each checkpoint records (a ``cka-probe train`` run's student).
        checkpoints: paths, glob patterns (sorted matches), or mappings with ``checkpoint`` and optionally
            ``model``, ``label``, ``layers``.
        layers: the default layer selection.

    Raises:
        IdentifyError: fewer than two checkpoints, a pattern that matches nothing, a checkpoint given twice,
            or entries of different architectures.
    """
    import timm.models

    from ..models import resolve_name

    entries: list[dict[str, Any]] = []
    for item in checkpoints:
        if isinstance(item, Mapping):
            if "checkpoint" not in item:
                raise ConfigError(f"checkpoints: entry {dict(item)!r} has no 'checkpoint' key; give its path")
            entries.append(dict(item))
            continue
        text = str(item)
        matches = sorted(glob.glob(text)) if glob.has_magic(text) else [text]
        if not matches:
            raise IdentifyError(f"checkpoint pattern {text!r} matches no file; check the path or glob")
        entries.extend({"checkpoint": m} for m in matches)
    paths = [str(Path(e["checkpoint"]).expanduser().resolve()) for e in entries]
    if len(set(paths)) != len(paths):
        twice = next(p for p in paths if paths.count(p) > 1)
        raise IdentifyError(f"checkpoint {twice} is given twice; pass each network once")
    if len(entries) < 2:
        got = f"got {len(entries)}" + (f" ({entries[0]['checkpoint']})" if entries else "")
        raise IdentifyError(
            f"identify needs at least two checkpoints of one architecture, {got}; pass more paths or a glob"
        )
    networks = []
    for entry, path in zip(entries, paths):
        name = entry.get("model", model) or _recorded_model(path)
        if not name:
            raise IdentifyError(f"no model name for checkpoint {path}; pass --model NAME (a timm name or alias)")
        label = str(entry.get("label") or Path(path).name)
        networks.append(Network(str(name), path, label, entry.get("layers", layers)))
    labels = [n.label for n in networks]
    if len(set(labels)) != len(labels):  # same file names in different folders: as much of the path as tells them apart
        from ..models import checkpoint_label

        parts = 2
        while len({checkpoint_label(n.checkpoint, parts=parts) for n in networks}) < len(networks):
            parts += 1
        networks = [
            Network(n.model, n.checkpoint, checkpoint_label(n.checkpoint, parts=parts), n.layers) for n in networks
        ]
    archs = [timm.models.get_arch_name(resolve_name(n.model).timm_name) for n in networks]
    other = next((i for i, arch in enumerate(archs) if arch != archs[0]), None)
    if other is not None:
        raise IdentifyError(
            f"checkpoints of different architectures: {networks[0].label} is {archs[0]} but "
            f"{networks[other].label} is {archs[other]}; identify compares networks of one architecture (one --model)"
        )
    return networks


def _recorded_model(path: str) -> str | None:
    """The model a checkpoint records (a ``cka-probe train`` run's student), else ``None``."""
    from ..models import read_checkpoint, select_state_dict

    return select_state_dict(read_checkpoint(path), path).model_name


def load_identify_config(path: str | Path, overrides: Any = None) -> dict[str, Any]:
    """Read an ``identify`` YAML file (``yaml.safe_load``) into keyword arguments of :func:`identify`.

    The file::

        model: resnet18                     # default architecture of every checkpoint
        checkpoints:                        # paths, globs, or {checkpoint, model, label, layers}
          - runs/seed*/model.pth
        data: {source: embedded, n: 128, seed: 0, batch_size: null, skip_bad: false}
        analysis: {layers: activations, tokens: patch, pools: [mean, flatten], estimator: full,
                   unbiased: false, precision: float64, device: auto}

    Relative paths are taken from the current directory. ``overrides`` (``--set KEY=VALUE`` strings or a
    ``{dotted key: value}`` mapping) change the file's values before it is checked, as in figure and zoo.

    Raises:
        ConfigError: unreadable YAML, an unknown key, or a value of the wrong kind.
    """
    return parse_identify_config(read_yaml(path, "identify config"), overrides, str(path))


def parse_identify_config(
    raw: Any, overrides: Any = None, source: str = "identify config", names: SettingNames = IDENTIFY_KEYS
) -> dict[str, Any]:
    """An ``identify`` configuration mapping (see :func:`load_identify_config`), with ``overrides`` set, checked
    and turned into keyword arguments of :func:`identify`. ``names`` spells the settings in the messages of the
    CKA checks: the file's keys, or :data:`~cka_probe.engine.estimation.FLAGS` where options alone set them."""
    from .config import IdentifyJob

    raw = copy.deepcopy(raw) if raw is not None else {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: an identify config must be a mapping of sections, got {type(raw).__name__}")
    for dotted, value in parse_overrides(overrides or {}).items():
        set_dotted(raw, dotted, value)
    job = validate(IdentifyJob, raw, source)
    data, analysis = job.data, job.analysis
    settings = CKASettings(
        unbiased=analysis.unbiased,
        estimator=analysis.estimator,
        batch_size=data.batch_size,
        precision=analysis.precision,
    )
    try:  # the check identify() runs, its message in the caller's terms
        settings.check(data.n, names)
        for pool in analysis.pools:
            check_pooling(pool, settings, data.n, names)
    except CKAProbeError as exc:
        raise type(exc)(str(exc) if names is FLAGS else f"{source}: {exc}") from None
    checkpoints = [
        entry if isinstance(entry, str) else entry.model_dump(exclude_none=True) for entry in job.checkpoints
    ]
    return {
        "model": job.model,
        "checkpoints": checkpoints,
        "data": data.source,
        "n": data.n,
        "seed": data.seed,
        "batch_size": data.batch_size,
        "skip_bad": data.skip_bad,
        "layers": analysis.layers,
        "tokens": analysis.tokens,
        "pools": tuple(analysis.pools),
        "estimator": analysis.estimator,
        "unbiased": analysis.unbiased,
        "precision": analysis.precision,
        "device": analysis.device,
        "layouts": analysis.layouts,
        "checkpoint_select": analysis.checkpoint_key,
        "img_size": analysis.img_size,
    }


# --------------------------------------------------------------------------- recording


@dataclass
class _Recorded:
    """What one network left: per pooling, features (pooled) or Grams (flattened), per batch."""

    network: Network
    provenance: dict[str, Any]
    layers: tuple[str, ...]
    layer_facts: list[dict[str, Any]]
    per_pool: dict[str, dict[str, list[torch.Tensor]]]
    widths: dict[str, dict[str, int]]
    seconds: float


def _check_complete(network: Network, loaded) -> None:
    """Refuse a checkpoint that misses or adds tensors of the architecture (identify compares whole networks).

    Raises:
        IdentifyError: missing or unexpected tensors.
    """
    if loaded.missing_keys or loaded.unexpected_keys:
        raise IdentifyError(
            f"checkpoint {network.label} does not fit {loaded.timm_name}: {len(loaded.missing_keys)} missing and "
            f"{len(loaded.unexpected_keys)} unexpected tensors (e.g. "
            f"{(list(loaded.missing_keys) + list(loaded.unexpected_keys))[0]}); identify needs checkpoints of one "
            "architecture, the one --model names"
        )


def _record_network(
    network: Network,
    probe,
    pools: Sequence[str],
    tokens: str,
    batch_size: int | None,
    precision: str,
    device: torch.device,
    progress: bool,
    layouts: Mapping[str, str],
    checkpoint_select: str,
    img_size: int | None = None,
) -> _Recorded:
    """One forward pass over the probe images, every pooling recorded at once (:func:`extract_poolings`)."""
    from ..data import batches
    from ..models import CheckpointKeysWarning, load_model, transform_for

    start = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", CheckpointKeysWarning)
        loaded = load_model(
            network.model,
            checkpoint=network.checkpoint,
            device=device,
            checkpoint_select=checkpoint_select,
            img_size=img_size,
        )
    _check_complete(network, loaded)
    for warning in caught:
        if not issubclass(warning.category, CheckpointKeysWarning):
            warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
    bounds = minibatch_bounds(probe.n, batch_size)
    # Grams of many batches wait on disk, read back batch by batch (see .spool): O(L b^2) per network
    spool = gram_spool(FLATTEN, len(bounds)) if FLATTEN in pools else None
    passes = extract_poolings(
        loaded.model,
        (images for images, _ in batches(probe, transform_for(loaded), bounds=bounds)),
        pools,
        layers=network.layers,
        tokens=tokens,
        layouts=dict(layouts) or None,
        precision=precision,
        device=device,
        total=probe.n,
        desc=network.label,
        progress=progress,
        spool=spool,
    )
    first = next(iter(passes.values()))
    return _Recorded(
        network,
        loaded.provenance(),
        tuple(info.name for info in first.layers),
        first.layer_provenance(),
        # what pair_tables takes: pooled (n, C) features, or one Gram per batch of a flattened layer
        {pool: extracted.features for pool, extracted in passes.items()},
        {pool: {info.name: info.pooled_dim for info in extracted.layers} for pool, extracted in passes.items()},
        time.perf_counter() - start,
    )


def _check_same_layers(recorded: Sequence[_Recorded]) -> None:
    reference = recorded[0]
    for other in recorded[1:]:
        if other.layers == reference.layers:
            continue
        a, b = reference.layers, other.layers
        position = next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))
        saw_a = a[position] if position < len(a) else "nothing"
        saw_b = b[position] if position < len(b) else "nothing"
        raise IdentifyError(
            f"layer lists differ between checkpoints: {reference.network.label} records {len(a)} layers and "
            f"{other.network.label} {len(b)} (at position {position + 1}: {saw_a} vs {saw_b}); "
            "use checkpoints of one architecture and one --layers selection"
        )


# --------------------------------------------------------------------------- CKA and scores


# CKA values closer than this count as a tie (a miss) in identification_scores: float rounding, not the networks,
# decides between them (float32 all-pairs products are within 3e-8 of float64; CKA's sampling error at n = 128 is
# about 1e-2).
TIE_TOLERANCE = 1e-6


def ordered_pairs(
    matrices: Mapping[tuple[int, int], np.ndarray], num_networks: int
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Every ordered pair of networks ``(i, j)``, ``i != j``, with its ``(L, L)`` CKA matrix (rows: ``i``'s layers),
    from the matrices of the pairs ``i < j``: the pair ``(j, i)`` reads the transpose."""
    for i in range(num_networks):
        for j in range(num_networks):
            if i != j:
                yield i, j, matrices[(i, j)] if i < j else matrices[(j, i)].T


def identification_scores(matrices: Mapping[tuple[int, int], np.ndarray], num_networks: int) -> np.ndarray:
    """Per layer, how many ordered network pairs identify it.

    Args:
        matrices: ``(i, j) -> (L, L)`` CKA of network ``i``'s layers (rows) against network ``j``'s, for
            ``i < j``; the pair ``(j, i)`` reads the transpose.
        num_networks: ``K``.

    Returns:
        ``(L,)`` integer counts out of ``K (K - 1)``: layer ``l`` of ``i`` counts when ``CKA(i_l, j_l)`` is
        finite and above every other finite ``CKA(i_l, j_m)`` by more than :data:`TIE_TOLERANCE`.

    Example:
        >>> m = np.array([[0.9, 0.2], [0.9, 0.5]])  # layer 1 of network 0 prefers layer 0 of network 1
        >>> # layer 0: found from network 0, a tie (0.9, 0.9) from network 1; layer 1: found only from network 1
        >>> identification_scores({(0, 1): m}, 2).tolist()
        [1, 1]
        >>> near = np.array([[0.9, 0.9 - 1e-9], [0.1, 0.95]])  # 1e-9 apart: a tie too, from network 0
        >>> identification_scores({(0, 1): near}, 2).tolist()
        [1, 2]
    """
    counts = None
    for _, _, matrix in ordered_pairs(matrices, num_networks):
        diagonal = np.diag(matrix)
        others = np.where(np.eye(len(matrix), dtype=bool) | np.isnan(matrix), -np.inf, matrix).max(axis=1)
        hit = np.isfinite(diagonal) & (diagonal > others + TIE_TOLERANCE)
        counts = hit.astype(int) if counts is None else counts + hit
    return counts


# --------------------------------------------------------------------------- result


@dataclass
class IdentifyResult:
    """Per-layer and overall identification shares for each pooling, with the CKA matrices and provenance.

    Attributes:
        table: one row per pooling and layer: ``pooling``, ``position`` (1-based), ``layer``, ``width``
            (features per example in the first network), ``identified``, ``comparisons``, ``share``.
        overall: pooling -> ``{"identified", "comparisons", "share"}``.
        matrices: pooling -> ``{(i, j): (L, L) CKA}`` for network pairs ``i < j``.
        metadata: provenance: networks (checkpoint paths and SHA-256), data, n, seed, layers, pooling, estimator,
            versions.
    """

    table: pd.DataFrame
    overall: dict[str, dict[str, float]]
    matrices: dict[str, dict[tuple[int, int], np.ndarray]] = field(repr=False)
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary_line(self) -> str:
        """``flatten 100.0 %, mean 85.2 % of 108 layer matches``."""
        parts = [f"{pool} {100 * stats['share']:.1f} %" for pool, stats in self.overall.items()]
        total = int(next(iter(self.overall.values()))["comparisons"])
        return f"{', '.join(parts)} of {total} layer matches"

    def plot(self):
        """The per-layer shares, one line per pooling (see :func:`cka_probe.plots.plot_identification`)."""
        from ..plots import plot_identification
        from ..plots.titles import identify_subtitle

        networks = self.metadata.get("networks", [])
        title = f"layer identification: {len(networks)} × {self.metadata.get('model', '?')}"
        return plot_identification(self.table, self.overall, title=title, subtitle=identify_subtitle(self.metadata))

    def save(
        self,
        directory: str | Path,
        formats: Sequence[str] = ("png",),
        stem: str = "identify",
        overwrite: bool = False,
        dpi: int = 200,
    ) -> dict[str, Path]:
        """Write ``stem.csv`` (the table), ``stem.json`` (overall shares, best matches, provenance) and the figure.

        Written as one set, the JSON renamed last (:mod:`cka_probe.engine._io`); nothing is written when any
        exists and ``overwrite`` is false, unless the set is one a kill cut short (its JSON missing).
        """
        paths = identify_outputs(directory, stem, formats)
        ensure_writable_dir(directory)
        check_outputs(paths.values(), overwrite)
        record = {
            **self.metadata,
            "overall": self.overall,
            "per_layer": self.table.to_dict(orient="records"),
            "best_matches": self._best_matches(),
        }
        formats = list(formats)
        with atomic_paths({**{fmt: paths[fmt] for fmt in formats}, "csv": paths["csv"], "json": paths["json"]}) as tmp:
            if formats:
                fig = self.plot()
                for fmt in formats:
                    fig.savefig(tmp[fmt], format=fmt, dpi=dpi)
            self.table.to_csv(tmp["csv"], index=False, float_format="%.10g")
            tmp["json"].write_text(json.dumps(_jsonable(record), indent=2) + "\n")
        return paths

    def _best_matches(self) -> dict[str, dict[str, list[int | None]]]:
        """pooling -> ``"i->j"`` -> for each layer of network i, the 1-based position of its most similar layer of j."""
        out: dict[str, dict[str, list[int | None]]] = {}
        labels = [n["label"] for n in self.metadata.get("networks", [])]
        for pool, pairs in self.matrices.items():
            out[pool] = {}
            for a, b, m in ordered_pairs(pairs, 1 + max(max(pair) for pair in pairs)):
                best = [None if np.isnan(row).all() else int(np.nanargmax(row)) + 1 for row in m]
                out[pool][f"{labels[a]} -> {labels[b]}" if labels else f"{a} -> {b}"] = best
        return out


def identify_outputs(
    directory: str | Path, stem: str = "identify", formats: Sequence[str] = ("png",)
) -> dict[str, Path]:
    """Where :meth:`IdentifyResult.save` writes: ``csv``, ``json`` and one entry per figure format (the same
    layout as a comparison's, :func:`~cka_probe.jobs.result.output_paths`)."""
    return output_paths(directory, stem, formats)


# --------------------------------------------------------------------------- the check


def identify(
    model: str | None,
    checkpoints: Sequence[Any],
    data: Any = "embedded",
    *,
    n: int = 128,
    seed: int = 0,
    batch_size: int | None = None,
    layers: Any = "activations",
    tokens: str = "patch",
    pools: Sequence[str] = DEFAULT_POOLS,
    estimator: str = "full",
    unbiased: bool = False,
    precision: str = "float64",
    device: str | torch.device = "auto",
    skip_bad: bool = False,
    progress: bool = True,
    layouts: Mapping[str, str] | Sequence[str] | None = None,
    checkpoint_select: str = "auto",
    img_size: int | None = None,
) -> IdentifyResult:
    """Kornblith et al.'s layer-identification check over several checkpoints of one architecture.

    Args:
        model: alias or timm name of the architecture (a config entry may name its own).
        checkpoints: paths, glob patterns, or mappings ``{checkpoint, model, label, layers}``; at least two.
        data: a probe source, as in :func:`~cka_probe.jobs.comparison`.
        n: probe images (a class-balanced, seeded subset).
        seed: subset choice.
        batch_size: images per forward pass; ``None`` is all n in one batch (the full estimator).
        layers: ``"activations"``, module names or glob patterns.
        tokens: ``"patch"``, ``"all"`` or ``"cls"`` for token layers with prefix tokens.
        pools: poolings to score: ``"mean"``, ``"max"``, ``"flatten"``.
        estimator: ``"full"`` or ``"minibatch"`` (:mod:`cka_probe.engine.estimation`).
        unbiased: the unbiased HSIC for the full estimator.
        precision: ``"float64"`` or ``"float32"`` arithmetic of the Grams (those of flattened layers, formed
            while recording, too) and of the all-pairs product, as in :func:`~cka_probe.jobs.comparison`.
        device: ``"auto"``, ``"cpu"`` or ``"cuda"``.
        skip_bad: skip unreadable images instead of failing.
        progress: show progress bars.
        layouts: ``{pattern: layout}`` (or ``["PATTERN=LAYOUT", ...]``) for layers whose layout cannot be
            decided, as :class:`~cka_probe.capture.FeatureRecorder` takes them; the same for every network.
        checkpoint_select: which weights of a training checkpoint: ``"auto"`` (the student), ``"student"``
            or ``"ema"`` (:func:`~cka_probe.models.load_model`).
        img_size: input resolution of every network (``None``: each network's own preprocessing, a
            ``cka-probe train`` run's evaluation transform or the model's pretrained config; recorded per network).

    Returns:
        An :class:`IdentifyResult`.

    Raises:
        IdentifyError: fewer than two checkpoints, checkpoints of different architectures, or layer lists
            that differ between them.
        ShapeError: the full estimator asked for flattened features over several batches, or a batch of fewer
            than 4 images for the minibatch estimator.
    """
    from ..data import load_probe_set

    started = time.perf_counter()
    pools = tuple(dict.fromkeys(pools))
    unknown = [p for p in pools if p not in POOLS]
    if not pools:
        raise IdentifyError(f"pools= names no pooling; give one or more of {', '.join(POOLS)}")
    if unknown:
        raise IdentifyError(f"unknown pooling {unknown[0]}; choose from {', '.join(POOLS)}")
    settings = CKASettings(
        kernel="linear", unbiased=bool(unbiased), estimator=estimator, batch_size=batch_size, precision=precision
    ).check(n)
    _tokens(tokens)
    layouts = parse_layouts(layouts, "--layouts") if layouts else {}
    if checkpoint_select not in CHECKPOINT_SELECT:
        raise IdentifyError(
            f"unknown --checkpoint-key {checkpoint_select!r}; choose from {', '.join(CHECKPOINT_SELECT)}"
        )
    networks = resolve_networks(model, checkpoints, layers)
    for net in networks:  # every checkpoint matched to its architecture and layers before any forward pass
        request = ModelRequest(
            net.model,
            checkpoint=net.checkpoint,
            label=net.label,
            checkpoint_select=checkpoint_select,
            img_size=img_size,
        )
        try:
            loaded = check_model(request, net.layers)
        except CKAProbeError as exc:
            raise type(exc)(f"network {net.label}: {exc}") from None
        _check_complete(net, loaded)
    device = resolve_device(device)
    probe = load_probe_set(str(data), n=n, seed=seed, skip_bad=skip_bad)
    for pool in pools:
        check_pooling(pool, settings, probe.n)
    size = batch_size or probe.n

    recorded = [
        _record_network(
            net, probe, pools, tokens, batch_size, precision, device, progress, layouts, checkpoint_select, img_size
        )
        for net in networks
    ]
    _check_same_layers(recorded)
    labels = recorded[0].layers
    matrices: dict[str, dict[tuple[int, int], np.ndarray]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZeroVarianceWarning)  # constant layers are NaN and count as misses
        for pool in pools:  # every pair of networks from one computation, as compare, figure and zoo do
            features = {str(i): {k: rec.per_pool[pool][k] for k in labels} for i, rec in enumerate(recorded)}
            pairs = [(str(i), str(j)) for i in range(len(recorded)) for j in range(i + 1, len(recorded))]
            tables = pair_tables(features, pairs, settings)
            matrices[pool] = {(int(a), int(b)): table.to_numpy() for (a, b), table in tables.items()}

    k = len(recorded)
    rows, overall = [], {}
    for pool in pools:
        counts = identification_scores(matrices[pool], k)
        comparisons = k * (k - 1)
        widths = recorded[0].widths[pool]
        for position, (label, count) in enumerate(zip(labels, counts), 1):
            rows.append(
                {
                    "pooling": pool,
                    "position": position,
                    "layer": label,
                    "width": widths[label],
                    "identified": int(count),
                    "comparisons": comparisons,
                    "share": count / comparisons,
                }
            )
        overall[pool] = {
            "identified": int(counts.sum()),
            "comparisons": comparisons * len(labels),
            "share": float(counts.sum()) / (comparisons * len(labels)),
        }
    labels_of = [r.network.label for r in recorded]
    metadata = {
        **output_header(
            models={r.network.label: r.provenance for r in recorded},
            data=probe.provenance(),
            n=probe.n,
            seed=seed,
            batch_size=size,
            layers={r.network.label: r.layer_facts for r in recorded},
            pools=pools,
            pooling="; ".join(pooling_description(pool) for pool in pools),
            tokens=dict.fromkeys(labels_of, tokens),
            settings=settings.record(),
            dtype=number_formats(pools, settings.precision),
            device=str(device),
            seconds={
                "networks": {r.network.label: round(r.seconds, 3) for r in recorded},
                "total": round(time.perf_counter() - started, 3),
            },
        ),
        "check": "layer identification (Kornblith et al. 2019, section 6.1): is the most similar layer of every "
        f"other network the corresponding one (maximum of linear CKA by more than {TIE_TOLERANCE:g})",
        "model": networks[0].model,
        "networks": [{"label": r.network.label, **r.provenance, "seconds": round(r.seconds, 3)} for r in recorded],
        "layer_selection": _spec_text(networks[0].layers),
        "layouts": dict(layouts),
        "checkpoint_select": checkpoint_select,
    }
    return IdentifyResult(pd.DataFrame(rows), overall, matrices, metadata)


def _spec_text(spec: Any) -> Any:
    return spec if isinstance(spec, str) else list(spec)
