"""timm's pretrained weights from the Hugging Face hub, failing fast and clearly when they cannot be had.

timm fetches the weights through ``huggingface_hub``, which honours ``HF_HUB_OFFLINE``, ``HF_HOME`` /
``HF_HUB_CACHE`` and the other hub settings. Two things are added around it:

* If the weights are not in the local cache and the hub is in offline mode or cannot be reached (one
  request, no retries), :class:`~cka_probe.errors.WeightsUnavailableError` is raised at once, instead of
  the hub client's minute of retries. Nothing ever falls back to random weights.
* A model with no published weights is an error too (timm itself would warn and go on with random
  initialisation).
"""

from __future__ import annotations

import os
import urllib.parse
from typing import Any

import huggingface_hub
import timm
import timm.models
from huggingface_hub.errors import HfHubHTTPError
from torch import nn

from .._files import sha256_file_checked
from ..errors import WeightsUnavailableError

__all__ = ["create_pretrained", "pretrained_record"]

_ALTERNATIVES = (
    "use random weights (--weights random), a local checkpoint (--checkpoint-a/--checkpoint-b PATH), "
    "run once with network access to fill the cache, or set HF_HOME to a cache that holds them"
)

_NO_WEIGHTS_ALTERNATIVES = (
    "use random weights (--weights random) or a local checkpoint (--checkpoint-a/--checkpoint-b PATH)"
)


def _hub_files(pretrained_cfg) -> tuple[str, str | None, tuple[str, ...]]:
    """The hub repository, revision and candidate file names timm will ask for (safetensors first)."""
    repo_id, _, revision = pretrained_cfg.hf_hub_id.partition("@")
    if pretrained_cfg.hf_hub_filename:
        return repo_id, revision or None, (pretrained_cfg.hf_hub_filename,)
    return repo_id, revision or None, ("model.safetensors", "pytorch_model.bin")


def _hub_cached(repo_id: str, revision: str | None, filenames: tuple[str, ...]) -> bool:
    return any(
        isinstance(huggingface_hub.try_to_load_from_cache(repo_id, filename, revision=revision), str)
        for filename in filenames
    )


def _local_weights_file(cfg) -> str | None:
    """The local file timm would load ``cfg``'s weights from, when it is there already (nothing is downloaded)."""
    if cfg.hf_hub_id:
        repo_id, revision, filenames = _hub_files(cfg)
        for filename in filenames:  # timm's order: safetensors first
            path = huggingface_hub.try_to_load_from_cache(repo_id, filename, revision=revision)
            if isinstance(path, str):
                return path
        return None
    if cfg.url:
        import torch.hub

        name = os.path.basename(urllib.parse.urlparse(cfg.url).path)
        path = os.path.join(torch.hub.get_dir(), "checkpoints", name)
        return path if os.path.isfile(path) else None
    if cfg.file and os.path.isfile(cfg.file):
        return cfg.file
    return None


def pretrained_record(timm_name: str) -> dict[str, Any]:
    """What names the pretrained weights timm would load for ``timm_name``, resolved without downloading.

    Returns:
        ``tag``: the ``architecture.tag`` timm resolves the name to (its default tag when the name has
        none); ``source``: the hub repository (``hf-hub:REPO[@REVISION]``), URL or file the weights come
        from; ``sha256``: the SHA-256 of the local weights file when it is in the Hugging Face (or torch
        hub) cache, else ``None``. Everything is ``None`` when timm publishes no weights for the name.
    """
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None:
        return {"tag": None, "source": None, "sha256": None}
    tag = f"{cfg.architecture}.{cfg.tag}" if cfg.tag else cfg.architecture
    source = f"hf-hub:{cfg.hf_hub_id}" if cfg.hf_hub_id else (cfg.url or cfg.file or None)
    path = _local_weights_file(cfg)
    return {"tag": tag, "source": source, "sha256": sha256_file_checked(path) if path else None}


def _hub_unreachable_reason(repo_id: str, revision: str | None, filename: str) -> str | None:
    """``None`` if the hub answers a single HEAD request for the file, else why it did not."""
    url = huggingface_hub.hf_hub_url(repo_id, filename, revision=revision)
    timeout = huggingface_hub.constants.HF_HUB_ETAG_TIMEOUT
    try:
        huggingface_hub.get_hf_file_metadata(url, timeout=timeout)
    except HfHubHTTPError:  # the hub answered (missing file, gated repo...): timm reports those itself
        return None
    except Exception as exc:  # any transport failure of the hub's HTTP client: DNS, refused, timeout, proxy
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else 'no detail'}"
    return None


def create_pretrained(timm_name: str, *, alternatives: str = _ALTERNATIVES, **model_kwargs) -> nn.Module:
    """Create a timm model with its published pretrained weights, failing fast and clearly when they cannot be had.

    Args:
        timm_name: A timm model name, optionally with a pretrained tag.
        alternatives: The fixes an error names, in the caller's terms (default: compare's options).
        **model_kwargs: Passed to ``timm.create_model`` (e.g. ``num_classes``).

    Returns:
        The model with pretrained weights.

    Raises:
        WeightsUnavailableError: timm has no weights for the model, or they are not cached and the hub is
            offline (``HF_HUB_OFFLINE``), unreachable, or refuses them.
    """
    cfg = timm.models.get_pretrained_cfg(timm_name)
    if cfg is None or not (cfg.hf_hub_id or cfg.url or cfg.file or cfg.state_dict):
        raise WeightsUnavailableError(
            f"timm publishes no pretrained weights for {timm_name}; "
            f"{_NO_WEIGHTS_ALTERNATIVES if alternatives is _ALTERNATIVES else alternatives}"
        )
    where = f"pretrained weights for {timm_name}"
    cache = huggingface_hub.constants.HF_HUB_CACHE
    if cfg.hf_hub_id:
        repo_id, revision, filenames = _hub_files(cfg)
        where = f"pretrained weights for {timm_name} ({repo_id})"
        if not _hub_cached(repo_id, revision, filenames):
            if huggingface_hub.constants.is_offline_mode():
                raise WeightsUnavailableError(
                    f"{where} are not in the Hugging Face cache ({cache}) and the hub is in offline mode "
                    f"(HF_HUB_OFFLINE); {alternatives}"
                )
            reason = _hub_unreachable_reason(repo_id, revision, filenames[0])
            if reason is not None:
                raise WeightsUnavailableError(
                    f"{where} are not in the Hugging Face cache ({cache}) and the hub cannot be reached "
                    f"({reason}); {alternatives}"
                )
    try:
        return timm.create_model(timm_name, pretrained=True, **model_kwargs)
    except OSError as exc:  # hub errors (offline, missing, gated) and URL download errors are all OSError
        detail = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise WeightsUnavailableError(f"{where} could not be loaded ({detail}); {alternatives}") from exc
