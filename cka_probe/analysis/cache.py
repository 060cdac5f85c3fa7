"""Feature cache: one model's pooled features on one probe set, stored once and reused by every job.

Each entry is keyed by everything that decides the features: the model (name, timm name, weights,
checkpoint hash, seed of random weights), the probe images (source and the hash of the ordered image
list, n, seed), the layer selection, pooling, token rule and layout overrides, the batch size, and
the cka-probe version. The key is a SHA-256 of that record in canonical JSON.

An entry is two files in the cache directory:

* ``<model>-<key>.safetensors``: the ``(n, C)`` float32 features, one tensor per layer (no pickle);
* ``<model>-<key>.json``: the key record, the layer order and facts, the data file's size and SHA-256.

The sidecar is written last, atomically, so an entry without one is incomplete. A data file whose size
or hash disagrees with its sidecar (truncated, corrupted) is never used: the features are recomputed
with a :class:`CacheCorruptWarning`. The directory is ``$CKA_PROBE_CACHE`` if set, else
``$XDG_CACHE_HOME/cka-probe/features`` (``~/.cache/cka-probe/features``). Several processes, or the nodes
of a cluster sharing the directory, can write it at once: entries are written to temporary files and
renamed, and two writers of one key write the same bytes.
"""

from __future__ import annotations

import json
import os
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from .._version import __version__
from ..capture import LayerInfo
from ._io import atomic_path, ensure_writable_dir
from .extract import ExtractedFeatures
from .._files import sha256_file
from .provenance import sha256_text
from .result import safe_name

__all__ = ["CacheCorruptWarning", "FeatureCache", "default_cache_dir", "feature_key"]

FORMAT_VERSION = 1


class CacheCorruptWarning(UserWarning):
    """A cache entry failed its size or hash check and is recomputed."""


def default_cache_dir() -> Path:
    """``$CKA_PROBE_CACHE``, else ``$XDG_CACHE_HOME/cka-probe/features``, else ``~/.cache/cka-probe/features``."""
    if os.environ.get("CKA_PROBE_CACHE"):
        return Path(os.environ["CKA_PROBE_CACHE"]).expanduser()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cka-probe" / "features"


def feature_key(model: dict[str, Any], data: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The record a cache entry is keyed by (see the module docstring)."""
    return {
        "format": FORMAT_VERSION,
        "cka_probe": __version__,
        "model": {k: model.get(k) for k in ("name", "timm_name", "weights", "checkpoint_sha256", "seed")},
        "data": {k: data.get(k) for k in ("kind", "source", "image_list_sha256", "n", "seed")},
        "settings": settings,
    }


def _digest(key: dict[str, Any]) -> str:
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
        ensure_writable_dir(self.directory, "feature cache directory",
                            "choose another with --cache-dir (or $CKA_PROBE_CACHE), or pass --no-cache")

    def paths(self, key: dict[str, Any]) -> tuple[Path, Path]:
        stem = f"{safe_name(str(key['model']['name']))}-{_digest(key)[:24]}"
        return self.directory / f"{stem}.safetensors", self.directory / f"{stem}.json"

    def load(self, key: dict[str, Any]) -> ExtractedFeatures | None:
        """The cached features for ``key``, or ``None`` when absent or failing its checks (with a warning)."""
        data_path, meta_path = self.paths(key)
        if not meta_path.exists():
            return None
        try:
            meta = json.loads(meta_path.read_text())
            problem = None
            if meta.get("key") != json.loads(json.dumps(key, default=str)):
                problem = "its key record differs from the one asked for"
            elif not data_path.exists():
                problem = "its data file is missing"
            elif data_path.stat().st_size != meta["size"]:
                problem = f"its data file has {data_path.stat().st_size} bytes instead of {meta['size']}"
            elif sha256_file(data_path) != meta["sha256"]:
                problem = "its data file's SHA-256 does not match"
            if problem is None:
                tensors = load_file(str(data_path))
                features = {name: tensors[name] for name in meta["layers"]}
        except (OSError, ValueError, KeyError) as exc:  # unreadable JSON, bad safetensors header, missing tensor
            problem = f"it cannot be read ({type(exc).__name__}: {exc})"
        if problem is not None:
            warnings.warn(f"cache entry {data_path.name} is not used: {problem}; recomputing it", CacheCorruptWarning,
                          stacklevel=2)
            return None
        return ExtractedFeatures(
            features=features,
            layers=[LayerInfo(**{**info, "raw_shape": tuple(info["raw_shape"])}) for info in meta["layer_info"]],
            n=int(meta["n"]),
            seconds=0.0,
            extra={"cache": str(data_path), "cached": True, "model": meta.get("model"),
                   "seconds_when_computed": meta.get("seconds")},
        )

    def save(self, key: dict[str, Any], extracted: ExtractedFeatures) -> Path:
        """Store ``extracted`` under ``key``; returns the data file's path."""
        self.check_writable()
        data_path, meta_path = self.paths(key)
        tensors = {name: t.detach().to("cpu", torch.float32).contiguous() for name, t in extracted.features.items()}
        with atomic_path(data_path) as tmp:
            save_file(tensors, str(tmp), metadata={"format": str(FORMAT_VERSION), "key_sha256": _digest(key)})
        meta = {
            "key": key,
            "layers": list(extracted.features),
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
