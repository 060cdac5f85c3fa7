"""What every output carries: the versions and environment it was computed with, and hashes."""

from __future__ import annotations

import hashlib
import platform
import sys
from importlib import metadata

from .._files import sha256_file

__all__ = ["package_versions", "sha256_file", "sha256_text", "environment"]

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
