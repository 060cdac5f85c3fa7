"""What every output carries: one provenance header (:func:`output_header`), the versions and environment it was
computed with, and hashes."""

from __future__ import annotations

import datetime as _dt
import hashlib
import platform
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from typing import Any

from .._files import sha256_file
from .._version import __version__

__all__ = ["TOKEN_RULES", "environment", "output_header", "package_versions", "sha256_file", "sha256_text"]

TOKEN_RULES = {
    "patch": "mean over patch tokens, prefix (class/distillation/register) tokens excluded",
    "all": "mean over all tokens, prefix tokens included",
    "cls": "class token only",
}

_PACKAGES = (
    "cka-probe",
    "torch",
    "torchvision",
    "timm",
    "numpy",
    "scipy",
    "pandas",
    "matplotlib",
    "seaborn",
    "safetensors",
)


def package_versions() -> dict[str, str]:
    """Installed versions of the packages that can change a result."""
    versions = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def environment() -> dict[str, str]:
    """Platform facts: OS, machine, and the CUDA device used if any."""
    import torch

    env = {"platform": platform.platform(), "machine": platform.machine(), "executable": sys.executable}
    if torch.cuda.is_available():
        env["cuda_device"] = torch.cuda.get_device_name()
        env["cuda"] = str(torch.version.cuda)
    return env


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def output_header(
    *,
    models: Mapping[str, Mapping[str, Any]],
    data: Mapping[str, Any],
    n: int,
    seed: int,
    batch_size: int,
    layers: Mapping[str, Sequence[Mapping[str, Any]]],
    pools: Sequence[str],
    pooling: str,
    tokens: Mapping[str, str],
    settings: Mapping[str, Any],
    dtype: str,
    device: str,
    seconds: Mapping[str, Any],
) -> dict[str, Any]:
    """The provenance header of every output: compare's JSON, figure's JSON, zoo's ``manifest.json``, identify's
    JSON and a training run's ``cka_provenance.json`` (CKA to the teacher). One schema, one type per key:

    * ``cka_probe`` (str): the package version; ``created`` (str): UTC time, ISO 8601.
    * ``models`` (dict): label -> the model's record (name, weights, checkpoint, ...); compare's labels are
      ``a`` and ``b``, a training run's ``student``, ``ema`` and ``teacher``.
    * ``data`` (dict): the probe set's provenance; ``n`` (int): images; ``seed`` (int): their draw;
      ``batch_size`` (int): images per forward pass.
    * ``layers`` (dict): label -> the recorded layers, one dict each (``name`` first).
    * ``pools`` (list): the poolings' names; ``pooling`` (str): how features were reduced, in words
      (several poolings: their descriptions joined by ``"; "``).
    * ``tokens`` (dict): label -> ``{"rule", "description"}``, the token rule of each model.
    * ``kernel``, ``sigma_frac``, ``unbiased``, ``estimator``, ``minibatch_size``, ``precision``,
      ``estimator_description``: the CKA settings (:meth:`~cka_probe.engine.estimation.CKASettings.record`).
    * ``dtype`` (str): the number formats behind the numbers; ``device`` (str): where they were computed.
    * ``versions`` (dict), ``environment`` (dict): packages and platform.
    * ``seconds`` (dict): timings, ``total`` among them.

    A job adds its own keys after these.
    """
    return {
        "cka_probe": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": {str(label): dict(record) for label, record in models.items()},
        "data": dict(data),
        "n": int(n),
        "seed": int(seed),
        "batch_size": int(batch_size),
        "layers": {str(label): [dict(layer) for layer in facts] for label, facts in layers.items()},
        "pools": list(pools),
        "pooling": pooling,
        "tokens": {str(label): {"rule": rule, "description": TOKEN_RULES[rule]} for label, rule in tokens.items()},
        **settings,
        "dtype": dtype,
        "device": str(device),
        "versions": package_versions(),
        "environment": environment(),
        "seconds": dict(seconds),
    }
