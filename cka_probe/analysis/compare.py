"""``compare``: two networks in, the CKA of every recorded layer of one against every layer of the other out."""

from __future__ import annotations

import datetime as _dt
import hashlib
import time
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import pandas as pd
import torch
from torch import nn

from .. import __version__
from ..errors import CKAProbeError, ShapeError
from ..math import KERNELS, MinibatchCKA, cka_matrix
from .extract import ExtractedFeatures, extract_features, resolve_device
from .features import FeatureSettings, ModelRequest, model_features, resolve_cache
from .provenance import environment, package_versions
from .result import CKAResult
from .summary import DEFAULT_BAND

__all__ = ["compare", "ESTIMATORS", "TOKEN_RULES", "estimator_description"]

ESTIMATORS = ("auto", "full", "minibatch")
TOKEN_RULES = {
    "patch": "mean over patch tokens, prefix (class/distillation/register) tokens excluded",
    "all": "mean over all tokens, prefix tokens included",
    "cls": "class token only",
}
POOLING = "mean over spatial positions (H, W), tokens, or the Mixer token-mixing axis; channels kept"


def estimator_description(kernel: str, unbiased: bool, estimator: str) -> str:
    kernel_text = "linear" if kernel == "linear" else "RBF (median bandwidth)"
    if estimator == "minibatch":
        return f"minibatch {kernel_text} CKA: unbiased HSIC (Song et al. 2012) averaged over batches (Nguyen et al. 2021)"
    hsic = "unbiased HSIC (Song et al. 2012)" if unbiased else "biased HSIC (Gretton et al. 2005)"
    return f"{kernel_text} CKA (Kornblith et al. 2019) over all n images, {hsic}"


def compare(
    a: str | nn.Module,
    b: str | nn.Module,
    data: Any = "embedded",
    *,
    n: int = 128,
    batch_size: int | None = None,
    seed: int = 0,
    weights: str = "pretrained",
    checkpoint_a: str | None = None,
    checkpoint_b: str | None = None,
    layers_a: Any = "activations",
    layers_b: Any = "activations",
    tokens: str = "patch",
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
    estimator: str = "auto",
    device: str | torch.device = "auto",
    skip_bad: bool = False,
    cache: Any = True,
    progress: bool = True,
) -> CKAResult:
    """CKA of every recorded layer of ``a`` (rows) against every recorded layer of ``b`` (columns).

    The defaults follow the OFA-KD supplementary, B.1: 128 images in one batch, features taken after
    every activation layer and averaged over their spatial dimensions, linear CKA.

    Args:
        a, b: model names (aliases such as ``mobilenetv2``, ``vit_s``, or any timm name) or modules.
        data: a probe source (``"embedded"``, a directory, ``"fashion-mnist[:DIR]"``, ``"imagenette"``,
            ``"synthetic"``), a tensor of prepared images ``(N, 3, H, W)`` fed to both models as is, or an
            iterable of such tensors (or of ``(images, labels)`` pairs, e.g. a DataLoader).
        n: number of images (a class-balanced, seeded subset of the source).
        batch_size: images per forward pass; ``None`` is all n in one batch, as in the paper.
        seed: subset choice, and the initialisation of ``weights="random"``.
        weights: ``"pretrained"`` (timm hub weights) or ``"random"``; a checkpoint overrides it per side.
        checkpoint_a, checkpoint_b: local weights (.pth, .pt, .safetensors).
        layers_a, layers_b: ``"activations"``, glob patterns or module names.
        tokens: ``"patch"``, ``"all"`` or ``"cls"`` for token layers of models with prefix tokens.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: unbiased HSIC estimator (n >= 4).
        sigma_frac: RBF bandwidth fraction of the median distance.
        estimator: ``"full"`` (CKA over all n images at once), ``"minibatch"`` (Nguyen et al. 2021,
            over batches of ``batch_size``), or ``"auto"``: full when all images form one batch, else minibatch.
        device: ``"auto"`` (CUDA when there is a GPU), ``"cpu"`` or ``"cuda"``; the CKA runs there too.
        skip_bad: skip unreadable images (counted in the metadata) instead of failing.
        cache: feature cache for named models on a probe source: ``True`` (the default directory, see
            :mod:`cka_probe.analysis.cache`), a directory, or ``False`` to compute without it.
        progress: show progress bars.

    Returns:
        A :class:`~cka_probe.analysis.result.CKAResult`.
    """
    started = time.perf_counter()
    estimator = _check_settings(n, batch_size, kernel, unbiased, estimator, tokens)
    device = resolve_device(device)

    inputs = _Inputs(data, n=n, seed=seed, skip_bad=skip_bad, batch_size=batch_size)
    same_model = isinstance(a, str) and a == b and checkpoint_a == checkpoint_b and layers_a == layers_b
    if inputs.probe is not None and isinstance(a, str) and isinstance(b, str):
        store = resolve_cache(cache)
        requests = [ModelRequest(a, weights, checkpoint_a, seed), ModelRequest(b, weights, checkpoint_b, seed)]
        settings = [FeatureSettings(layers_a, tokens, batch_size=batch_size), FeatureSettings(layers_b, tokens, batch_size=batch_size)]
        extracted_a = model_features(requests[0], inputs.probe, settings[0], device=device, cache=store, progress=progress)
        extracted_b = extracted_a if same_model else model_features(
            requests[1], inputs.probe, settings[1], device=device, cache=store, progress=progress)
    else:
        def direct(model, checkpoint, layers):
            return _extract_direct(model, inputs, weights=weights, checkpoint=checkpoint, seed=seed, layers=layers,
                                   tokens=tokens, device=device, progress=progress)

        extracted_a = direct(a, checkpoint_a, layers_a)
        extracted_b = extracted_a if same_model else direct(b, checkpoint_b, layers_b)
    model_a, model_b = extracted_a.extra["model"], extracted_b.extra["model"]
    _check_same_n(extracted_a, extracted_b, inputs.n)

    values = _cka(extracted_a, extracted_b, kernel, unbiased, sigma_frac, estimator, batch_size or inputs.n, same_model)
    matrix = pd.DataFrame(
        values.cpu().numpy(),
        index=pd.Index(list(extracted_a.features), name=model_a["name"]),
        columns=pd.Index(list(extracted_b.features), name=model_b["name"]),
    )
    result = CKAResult(matrix=matrix, metadata={})
    result.metadata = {
        "cka_probe": __version__,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "models": {"a": model_a, "b": model_b},
        "weights": {"a": model_a["weights"], "b": model_b["weights"]},
        "data": inputs.provenance(),
        "n": inputs.n,
        "batch_size": batch_size or inputs.n,
        "seed": seed,
        "layer_selection": {"a": _spec_text(layers_a), "b": _spec_text(layers_b)},
        "layers": {"a": extracted_a.layer_provenance(), "b": extracted_b.layer_provenance()},
        "pooling": POOLING,
        "tokens": {"rule": tokens, "description": TOKEN_RULES[tokens]},
        "kernel": kernel,
        "sigma_frac": sigma_frac if kernel == "rbf" else None,
        "unbiased": bool(unbiased or estimator == "minibatch"),
        "estimator": estimator,
        "estimator_description": estimator_description(kernel, unbiased, estimator),
        "dtype": "features float32, CKA float64",
        "device": str(device),
        "versions": package_versions(),
        "environment": environment(),
        "seconds": {
            "features_a": round(extracted_a.seconds, 3),
            "features_b": round(extracted_b.seconds, 3),
            "features_from_cache": {"a": bool(extracted_a.extra.get("cached")), "b": bool(extracted_b.extra.get("cached"))},
            "total": round(time.perf_counter() - started, 3),
        },
    }
    result.metadata["summary"] = {
        "diagonal_band_mean": result.diagonal_band_mean(),
        "band_width": DEFAULT_BAND,
        "mean": float(matrix.stack().mean()) if matrix.notna().any().any() else float("nan"),
    }
    return result


# --------------------------------------------------------------------------- internals


def _check_settings(n, batch_size, kernel, unbiased, estimator, tokens) -> str:
    if kernel not in KERNELS:
        raise CKAProbeError(f"unknown kernel {kernel!r}; choose one of {', '.join(KERNELS)}")
    if estimator not in ESTIMATORS:
        raise CKAProbeError(f"unknown estimator {estimator!r}; choose one of {', '.join(ESTIMATORS)}")
    if tokens not in TOKEN_RULES:
        raise CKAProbeError(f"unknown token rule {tokens!r}; choose one of {', '.join(TOKEN_RULES)}")
    if n is not None and n < 2:
        raise ShapeError(f"n={n} images cannot give a CKA; use -n 2 or more (128 as in the paper)")
    if batch_size is not None and batch_size < 1:
        raise CKAProbeError(f"--batch-size must be positive, got {batch_size}")
    if estimator == "auto":
        estimator = "minibatch" if batch_size is not None and n is not None and batch_size < n else "full"
    if (unbiased or estimator == "minibatch") and n is not None and n < 4:
        raise ShapeError(f"the unbiased estimator needs n >= 4 images, got n={n}; raise -n or drop --unbiased")
    if estimator == "minibatch" and batch_size is not None and batch_size < 4:
        raise ShapeError(f"the minibatch estimator needs batches of 4 or more, got --batch-size {batch_size}")
    return estimator


def _cka(ext_a: ExtractedFeatures, ext_b: ExtractedFeatures, kernel, unbiased, sigma_frac, estimator,
         batch_size: int, same_model: bool) -> torch.Tensor:
    if estimator == "full":
        result = cka_matrix(ext_a.features, None if same_model else ext_b.features,
                            kernel=kernel, unbiased=unbiased, sigma_frac=sigma_frac)
        return result.values
    metric = MinibatchCKA(kernel=kernel, sigma_frac=sigma_frac)
    for start in range(0, ext_a.n, batch_size):
        stop = start + batch_size
        if ext_a.n - stop < 4 and stop < ext_a.n:
            stop = ext_a.n  # a last batch of fewer than 4 images joins the one before
        part_a = {k: v[start:stop] for k, v in ext_a.features.items()}
        part_b = None if same_model else {k: v[start:stop] for k, v in ext_b.features.items()}
        metric.update(part_a, part_b)
        if stop == ext_a.n:
            break
    return metric.compute().values


def _extract_direct(model, inputs: _Inputs, *, weights, checkpoint, seed, layers, tokens, device, progress):
    """Features of a module (or a named model on caller-given tensors), without the cache."""
    from ..models import load_model, transform_for

    loaded = load_model(model, weights=weights, checkpoint=checkpoint, seed=seed, device=device)
    extracted = extract_features(loaded.model, inputs.batches(transform_for(loaded)), layers=layers, tokens=tokens,
                                 device=device, total=inputs.n, desc=loaded.name, progress=progress)
    extracted.extra.update({"model": loaded.provenance(), "cached": False})
    return extracted


def _check_same_n(ext_a: ExtractedFeatures, ext_b: ExtractedFeatures, n: int) -> None:
    if ext_a.n != n or ext_b.n != n:
        raise ShapeError(f"the models saw {ext_a.n} and {ext_b.n} images instead of n={n}; check the data loader")


def _spec_text(spec: Any) -> Any:
    if isinstance(spec, str):
        return spec
    if callable(spec):
        return getattr(spec, "__name__", "callable")
    return list(spec)


class _Inputs:
    """The images both models see: a probe set prepared per model, or tensors given by the caller."""

    def __init__(self, data: Any, *, n: int, seed: int, skip_bad: bool, batch_size: int | None) -> None:
        self.batch_size = batch_size
        self.probe = None
        self.tensor: torch.Tensor | None = None
        if isinstance(data, str) or hasattr(data, "__fspath__"):
            from ..data import load_probe_set

            self.probe = load_probe_set(str(data), n=n, seed=seed, skip_bad=skip_bad)
            self.n = self.probe.n
        elif isinstance(data, torch.Tensor):
            if data.ndim != 4:
                raise ShapeError(f"a tensor of images must be (N, 3, H, W), got shape {tuple(data.shape)}")
            if n is not None and n > len(data):
                raise ShapeError(f"n={n} but the tensor holds {len(data)} images; lower -n")
            self.tensor = data[:n] if n is not None else data
            self.n = len(self.tensor)
        elif isinstance(data, Iterable):
            self.tensor = _collect(data, n)
            self.n = len(self.tensor)
        else:
            raise CKAProbeError(
                f"data must be a source name, a directory, a tensor or an iterable of tensors, got {type(data).__name__}"
            )

    def batches(self, transform) -> Iterator[torch.Tensor]:
        if self.probe is not None:
            from ..data import batches

            for images, _ in batches(self.probe, transform, self.batch_size or self.n):
                yield images
            return
        size = self.batch_size or self.n
        yield from self.tensor.split(size)

    def provenance(self) -> dict[str, Any]:
        if self.probe is not None:
            return self.probe.provenance()
        tensor = self.tensor.detach().cpu().contiguous()
        header = f"{tuple(tensor.shape)} {tensor.dtype}".encode()
        digest = hashlib.sha256(header + tensor.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        return {"source": "tensor given by the caller (prepared by the caller, fed to both models as is)",
                "kind": "tensor", "n": self.n, "image_list_sha256": digest, "synthetic": False}


def _collect(data: Iterable, n: int | None) -> torch.Tensor:
    """Images from a DataLoader-like iterable, up to n, as one tensor (pooled features need them twice)."""
    parts, count = [], 0
    for item in data:
        images = item[0] if isinstance(item, list | tuple) else item
        if isinstance(images, Mapping):
            raise CKAProbeError("batches given as mappings are not supported; yield tensors or (images, labels)")
        parts.append(images)
        count += len(images)
        if n is not None and count >= n:
            break
    if not parts:
        raise CKAProbeError("the data loader yielded no images")
    images = torch.cat(parts)
    if n is not None and len(images) < n:
        raise ShapeError(f"n={n} but the data loader yielded {len(images)} images; lower -n")
    return images[:n] if n is not None else images
