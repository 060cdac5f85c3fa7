"""Feature cache: one model's pooled features on one probe set, stored once and reused by every job.

Each entry is keyed by everything that decides the features:

* the model: name, timm name, weights; for a checkpoint its SHA-256; for pretrained weights the
  ``architecture.tag`` timm resolves the name to, the hub repository (or URL) and the SHA-256 of the
  local weights file (:func:`cka_probe.models.pretrained_record`); for random weights their seed;
* the probe images: source, n, seed, the hash of the ordered image list and the hash of their content
  (the bytes of every image file, or the decoded pixels of images held in memory), so an image edited in
  place gives another key;
* the layer selection, pooling, token rule and layout overrides, the batch size;
* the versions of cka-probe, torch and timm.

The key is a SHA-256 of that record in canonical JSON. File hashes are computed once per process for each
version (path, size, modification time, inode) of a file.

An entry is two files in the cache directory:

* ``<model>-<key>.safetensors``: the ``(n, C)`` float32 features, one tensor per layer (no pickle), with
  the layer order in its metadata (flattened layers: one float64 Gram per layer and batch);
* ``<model>-<key>.json``: the key record, the layer order and facts, the data file's size and SHA-256.

Flattened layers over several batches, recorded through a :class:`~cka_probe.engine.spool.GramSpool`, keep
one data file per batch instead, ``<model>-<key>.gram<k>.safetensors`` (every layer's Gram of batch ``k``),
each with its size and SHA-256 in the sidecar; they are read back one batch at a time
(:class:`~cka_probe.engine.spool.SpooledGrams`), so a cached run holds ``O(L b^2)`` numbers, not ``O(L n b)``.

The sidecar is written last, atomically, so an entry without one is incomplete. An entry is never used,
and the features are recomputed with a :class:`CacheCorruptWarning`, when its data file's size or hash
disagrees with its sidecar (truncated, corrupted), or when the layer order differs between the sidecar's
list, its layer facts and the data file, or it holds a layer that the requested selection does not name.

The directory is ``$CKA_PROBE_CACHE/features`` if ``CKA_PROBE_CACHE`` is set, else
``$XDG_CACHE_HOME/cka-probe/features`` (``~/.cache/cka-probe/features``); downloaded data sets go to the
``datasets`` folder beside it. Several processes, or the nodes of a cluster sharing the directory, can
write it at once: entries are written to temporary files and renamed, and two writers of one key write
the same bytes. A writer killed mid-write (SIGKILL) leaves a temporary file that the next write of that
entry removes (see :mod:`cka_probe._files`).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import warnings
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from .._files import cache_root, sha256_file, sha256_file_checked
from .._version import __version__
from ..capture import LayerInfo
from ..errors import ArgumentError
from ._io import atomic_path, ensure_writable_dir, safe_name
from .provenance import sha256_text
from .spool import GramSpool, SpooledGrams

__all__ = ["CacheCorruptWarning", "FeatureCache", "default_cache_dir", "feature_key", "key_digest"]

FORMAT_VERSION = 2


class CacheCorruptWarning(UserWarning):
    """A cache entry failed its size or hash check and is recomputed."""


def default_cache_dir() -> Path:
    """``$CKA_PROBE_CACHE/features``, else ``$XDG_CACHE_HOME/cka-probe/features``, else ``~/.cache/cka-probe/features``.

    Downloaded data sets go to the ``datasets`` folder beside it (:func:`cka_probe.data.default_cache_dir`).
    """
    return cache_root() / "features"


def _gram_key(layer: str, batch: int) -> str:
    """The tensor name of one batch's Gram of a flattened layer."""
    return f"{layer}::gram{batch}"


def feature_key(model: dict[str, Any], data: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The record a cache entry is keyed by (see the module docstring).

    Args:
        model: :meth:`~cka_probe.engine.features.ModelRequest.key_record` of the model.
        data: the probe set's :meth:`~cka_probe.data.ProbeSet.provenance`.
        settings: :meth:`~cka_probe.engine.features.FeatureSettings.record`.
    """
    import timm

    return {
        "format": FORMAT_VERSION,
        "cka_probe": __version__,
        "versions": {"torch": torch.__version__, "timm": timm.__version__},
        "model": dict(model),  # all of key_record: what identifies the weights is defined there, once
        "data": {k: data.get(k) for k in ("kind", "source", "image_list_sha256", "content_sha256", "n", "seed")},
        "settings": settings,
    }


def _layer_order_problem(meta: dict[str, Any], stored_order: list[str] | None, key: dict[str, Any]) -> str | None:
    """Why the layer order of an entry cannot be trusted, or ``None``."""
    listed = list(meta["layers"])
    described = [info["name"] for info in meta["layer_info"]]
    if described != listed:
        return "its layer list and its layer facts are in different orders"
    if stored_order != listed:
        return "its layer list differs from the order stored with the features"
    requested = key["settings"].get("layers")
    if isinstance(requested, str):
        requested = None if requested == "activations" else [requested]
    if isinstance(requested, list) and all(isinstance(p, str) for p in requested):
        modules = [info["module_name"] for info in meta["layer_info"]]
        if any(not any(fnmatch.fnmatchcase(m, p) for p in requested) for m in modules):
            return "it holds layers outside the requested selection"
    return None


_LAYER_FACTS = tuple(field.name for field in fields(LayerInfo))


def _sidecar_facts(
    meta: dict[str, Any], key: dict[str, Any], features: dict[str, Any]
) -> tuple[list[LayerInfo] | None, str | None]:
    """The layer facts of a sidecar, and why the sidecar cannot be trusted (``None`` when it can): facts with other
    fields than this version writes, or an ``n`` other than the key's and the stored features' (a damaged or
    foreign sidecar is a corrupt entry, recomputed, never an error of the job)."""
    for info in meta["layer_info"]:
        if not isinstance(info, dict) or sorted(info) != sorted(_LAYER_FACTS):
            return None, "its layer facts do not have the fields this version writes"
    n = meta["n"]
    if not isinstance(n, int) or isinstance(n, bool) or n != key["data"].get("n"):
        return None, f"its n ({n!r}) differs from the n of its key ({key['data'].get('n')})"
    for name, value in features.items():
        if isinstance(value, SpooledGrams):
            rows = sum(value.sizes)
        else:  # a (n, C) tensor, or one (b, b) Gram per batch
            rows = sum(int(g.shape[0]) for g in value) if isinstance(value, list) else int(value.shape[0])
        if rows != n:
            return None, f"its layer {name} holds {rows} images, not n = {n}"
    layers = [LayerInfo(**{**info, "raw_shape": tuple(info["raw_shape"])}) for info in meta["layer_info"]]
    return layers, None


def key_digest(key: dict[str, Any]) -> str:
    """The SHA-256 of a :func:`feature_key` record in canonical JSON (what names its cache entry)."""
    return sha256_text(json.dumps(key, sort_keys=True, default=str))


class FeatureCache:
    """Read and write pooled features under a directory.

    Args:
        directory: where entries live (default :func:`default_cache_dir`).
    """

    def __init__(self, directory: str | os.PathLike | None = None) -> None:
        self.directory = Path(directory) if directory is not None else default_cache_dir()

    def check_writable(self) -> None:
        """Fail now, with a one-line error, if entries cannot be written (before any model runs)."""
        ensure_writable_dir(
            self.directory,
            "feature cache directory",
            "choose another with --cache-dir (or $CKA_PROBE_CACHE), or pass --no-cache",
        )

    def paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        stem = f"{safe_name(str(key['model']['name']))}-{key_digest(key)[:24]}"
        return self.directory / f"{stem}.safetensors", self.directory / f"{stem}.json"

    def part_paths(self, key: dict[str, Any], batches: int) -> list[Path]:
        """The per-batch data files of an entry of spooled Grams."""
        data_path, _ = self.paths(key)
        return [
            data_path.with_name(f"{data_path.name.removesuffix('.safetensors')}.gram{k}.safetensors")
            for k in range(batches)
        ]

    def load(self, key: dict[str, Any]) -> dict[str, Any] | None:
        """The cached entry for ``key`` as the fields of an :class:`~cka_probe.engine.features.ExtractedFeatures`
        (``features``, ``layers``, ``n``, ``seconds``, ``extra``), or ``None`` when absent or failing its checks
        (with a warning)."""
        data_path, meta_path = self.paths(key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            problem = None
            if meta.get("key") != json.loads(json.dumps(key, default=str)):
                problem = "its key record differs from the one asked for"
            elif meta.get("parts") is not None:
                problem, features = self._load_parts(key, meta)
            elif not data_path.exists():
                problem = "its data file is missing"
            elif data_path.stat().st_size != meta["size"]:
                problem = f"its data file has {data_path.stat().st_size} bytes instead of {meta['size']}"
            elif sha256_file(data_path) != meta["sha256"]:
                problem = "its data file's SHA-256 does not match"
            if problem is None and meta.get("parts") is None:
                with safe_open(str(data_path), framework="pt") as handle:
                    stored_order = json.loads((handle.metadata() or {}).get("layers", "null"))
                    problem = _layer_order_problem(meta, stored_order, key)
                    if problem is None:
                        batches = meta.get("gram_batches")
                        features = (
                            {name: handle.get_tensor(name) for name in meta["layers"]}
                            if batches is None
                            else {
                                name: [handle.get_tensor(_gram_key(name, k)) for k in range(batches)]
                                for name in meta["layers"]
                            }
                        )
            if problem is None:
                layers, problem = _sidecar_facts(meta, key, features)
        except (OSError, ValueError, KeyError, TypeError, AttributeError, SafetensorError) as exc:  # bad JSON or header
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem is not None:
            warnings.warn(
                f"cache entry {data_path.name} is not used: {problem}; recomputing it",
                CacheCorruptWarning,
                stacklevel=2,
            )
            return None
        return dict(
            features=features,
            layers=layers,
            n=int(meta["n"]),
            seconds=0.0,
            extra={
                "cache": str(meta_path if meta.get("parts") is not None else data_path),
                "cached": True,
                "model": meta.get("model"),
                "seconds_when_computed": meta.get("seconds"),
            },
        )

    def _load_parts(self, key: dict[str, Any], meta: dict[str, Any]) -> tuple[str | None, dict[str, Any] | None]:
        """``(problem, features)`` of an entry of spooled Grams: its per-batch files checked, nothing read yet."""
        parts = meta["parts"]
        paths = self.part_paths(key, len(parts))
        for k, (path, part) in enumerate(zip(paths, parts)):
            if not path.exists():
                return f"its data file for batch {k} is missing", None
            if path.stat().st_size != part["size"]:
                return f"its data file for batch {k} has {path.stat().st_size} bytes instead of {part['size']}", None
            if sha256_file_checked(path) != part["sha256"]:  # and again whenever the batch is read (GramSpool)
                return f"its data file for batch {k} has another SHA-256", None
        with safe_open(str(paths[0]), framework="pt") as handle:
            stored_order = json.loads((handle.metadata() or {}).get("layers", "null"))
        problem = _layer_order_problem(meta, stored_order, key)
        if problem is not None:
            return problem, None
        spool = GramSpool(
            files=paths,
            layers=meta["layers"],
            sizes=[part["batch_size"] for part in parts],
            digests=[part["sha256"] for part in parts],
        )
        return None, spool.features()

    def save(self, key: dict[str, Any], extracted: Any) -> Path:
        """Store ``extracted`` under ``key``; returns the data file's path (of spooled Grams: the sidecar's).

        Spooled Grams (:class:`~cka_probe.engine.spool.SpooledGrams`, all of one spool in the same cache
        directory) are not copied: their batch files are renamed into the entry, and read from there after."""
        self.check_writable()
        data_path, meta_path = self.paths(key)
        spooled = {value.spool for value in extracted.features.values() if isinstance(value, SpooledGrams)}
        if spooled:
            return self._save_spool(key, extracted, spooled)
        tensors, batches = {}, None
        for name, value in extracted.features.items():
            if isinstance(value, list):  # flattened: one float64 Gram per batch, kept in float64
                batches = len(value)
                tensors.update(
                    {_gram_key(name, k): g.detach().to("cpu", torch.float64).contiguous() for k, g in enumerate(value)}
                )
            else:
                tensors[name] = value.detach().to("cpu", torch.float32).contiguous()
        with atomic_path(data_path) as tmp:
            save_file(
                tensors,
                str(tmp),
                metadata={
                    "format": str(FORMAT_VERSION),
                    "key_sha256": key_digest(key),
                    "layers": json.dumps(list(extracted.features)),
                },
            )
        meta = {
            "key": key,
            "layers": list(extracted.features),
            "gram_batches": batches,
            "layer_info": [asdict(info) for info in extracted.layers],
            "n": extracted.n,
            "model": extracted.extra.get("model"),
            "seconds": round(extracted.seconds, 3),
            "size": data_path.stat().st_size,
            "sha256": sha256_file(data_path),
        }
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n")
        return data_path

    def _save_spool(self, key: dict[str, Any], extracted: Any, spooled: set[GramSpool]) -> Path:
        _, meta_path = self.paths(key)
        spool = next(iter(spooled))
        if len(spooled) != 1 or list(extracted.features) != spool.layers:
            raise ArgumentError("spooled Grams are cached only when every layer is one spool's, in its order")
        targets = self.part_paths(key, len(spool.files))
        if spool.directory is not None and spool.directory.parent.resolve() == self.directory.resolve():
            spool.move_files(targets)  # the same file system: renamed, not copied
        else:
            for source, target in zip(spool.files, targets):
                with atomic_path(target) as tmp:
                    shutil.copyfile(source, tmp)
        meta = {
            "key": key,
            "layers": list(extracted.features),
            "gram_batches": len(targets),
            "parts": [  # the SHA-256 of the bytes written, checked whenever a batch is read
                {"batch_size": size, "size": path.stat().st_size, "sha256": digest}
                for size, path, digest in zip(spool.sizes, targets, spool.digests)
            ],
            "layer_info": [asdict(info) for info in extracted.layers],
            "n": extracted.n,
            "model": extracted.extra.get("model"),
            "seconds": round(extracted.seconds, 3),
        }
        with atomic_path(meta_path) as tmp:
            tmp.write_text(json.dumps(meta, indent=1, default=str) + "\n")
        return meta_path
