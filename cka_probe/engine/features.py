"""One model's features on the probe images: the forward pass, what was recorded, and the feature cache.

* :func:`extract_features` runs a model over batches under ``torch.inference_mode`` with a
  :class:`~cka_probe.capture.FeatureRecorder` and returns :class:`ExtractedFeatures` (pooled features,
  or per-batch Grams of flattened ones, and the layer facts);
* :func:`model_features` does that for a :class:`ModelRequest` on a probe set through the feature
  cache, so that a model's forward pass runs once per key (:mod:`cka_probe.engine.cache`);
* :func:`safe_model_features` turns the failure of one model into a :class:`ModelFailure`, so that
  jobs over many models go on (:mod:`cka_probe.engine.executors` runs them here or on Ray).
"""

from __future__ import annotations

import contextlib
import time
import traceback
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from .._device import resolve_device
from .._files import sha256_file_checked
from ..capture import FeatureRecorder, LayerInfo
from ..capture.pooling import FLATTEN
from ..errors import CheckpointError, CKAProbeError
from .cache import FeatureCache, feature_key
from .estimation import minibatch_bounds, recorded_to
from .spool import GramSpool, SpooledGrams

__all__ = [
    "ExtractedFeatures",
    "FeatureSettings",
    "ModelFailure",
    "ModelRequest",
    "extract_features",
    "extract_poolings",
    "gram_spool",
    "model_features",
    "model_provenance",
    "record_device",
    "resolve_cache",
    "resolve_device",
    "safe_model_features",
]


#: How a model's images are prepared, in its cache key: a ``cka-probe train`` checkpoint's own evaluation
#: transform, any other model's timm pretrained config. (Entries cached before runs kept their own transform
#: were made at the pretrained config's size; naming the rule keeps them from being read back.)
PREPROCESSING_RULE = (
    "run checkpoint (cka-probe train, or official OFA-KD train.py): the run's evaluation transform; "
    "else: the model's pretrained config"
)  # part of every feature cache key: a change of the rule must not read back entries made under the old one

# With --pool flatten, a model's Grams go to a GramSpool (see .spool) when it runs this many forward batches or
# more; with fewer they stay in memory. (benchmarks/bench_spool.py sets it out of reach for its in-memory rows.)
SPOOL_FROM_BATCHES = 2


def gram_spool(pool: str, batches: int, cache: FeatureCache | None = None) -> GramSpool | None:
    """Where a pass's Grams of flattened layers wait: a :class:`~cka_probe.engine.spool.GramSpool` (in the cache's
    directory when there is a cache) over ``SPOOL_FROM_BATCHES`` batches or more, else None (they stay in memory)."""
    if pool != FLATTEN or batches < SPOOL_FROM_BATCHES:
        return None
    return GramSpool.inside(cache.directory) if cache is not None else GramSpool()


@dataclass
class ExtractedFeatures:
    """What one model's pass recorded, layer names in forward order, and layer facts.

    ``features`` maps each layer to its pooled ``(n, C)`` float32 features, or, with ``pool="flatten"``,
    to a list of ``(b_k, b_k)`` float64 Grams of the batches' centred, flattened activations (one per
    forward batch, in order): the activations themselves are never held.
    """

    features: dict[str, torch.Tensor | list[torch.Tensor] | SpooledGrams]
    layers: list[LayerInfo]
    n: int
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)

    def to(self, device: torch.device | str) -> ExtractedFeatures:
        """Move every recorded tensor (features or Grams) to ``device``, in place; returns ``self``. Spooled Grams
        (:class:`~cka_probe.engine.spool.SpooledGrams`) stay on disk and are read onto ``device``."""
        self.features = {name: recorded_to(value, device) for name, value in self.features.items()}
        return self

    def layer_provenance(self) -> list[dict[str, Any]]:
        return [
            {
                "name": info.name,
                "module": info.module_name,
                "type": info.module_type,
                "layout": info.layout,
                "layout_rule": info.layout_source,
                "prefix_tokens": info.prefix_tokens,
                "raw_shape": list(info.raw_shape[1:]),
                "pooled_dim": info.pooled_dim,
            }
            for info in self.layers
        ]


def extract_features(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    *,
    layers: Any = "activations",
    tokens: str = "patch",
    layouts: Mapping[str, str] | None = None,
    pool: str = "mean",
    precision: str = "float64",
    device: torch.device | str = "cpu",
    total: int | None = None,
    desc: str | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    spool: GramSpool | None = None,
) -> ExtractedFeatures:
    """Run ``model`` over ``batches`` under ``torch.inference_mode`` and record pooled features.

    Args:
        model: the network, in eval mode, on ``device``.
        batches: input tensors ``(b, 3, H, W)`` (already prepared for this model), in the probe order.
        layers, tokens, layouts, pool, precision: as in :class:`~cka_probe.capture.FeatureRecorder`.
        device: where the batches are moved; the features stay there.
        total: number of images, for the progress bar.
        desc: progress bar label.
        progress: show a tqdm bar over images.
        autocast_dtype: run the forward under autocast with this dtype (features are pooled in float32).
        spool: with ``pool="flatten"``, write each batch's Grams there as the pass goes and return them as
            :class:`~cka_probe.engine.spool.SpooledGrams` (memory ``O(L b^2)`` whatever the number of batches).

    Returns:
        :class:`ExtractedFeatures`.
    """
    options = {"layers": layers, "tokens": tokens, "layouts": layouts, "precision": precision}
    passes = extract_poolings(
        model, batches, [pool], **options, device=device, total=total, desc=desc, progress=progress,
        autocast_dtype=autocast_dtype, spool=spool,
    )  # fmt: skip
    return passes[pool]


def extract_poolings(
    model: torch.nn.Module,
    batches: Iterable[torch.Tensor],
    pools: Sequence[str],
    *,
    layers: Any = "activations",
    tokens: str = "patch",
    layouts: Mapping[str, str] | None = None,
    precision: str = "float64",
    device: torch.device | str = "cpu",
    total: int | None = None,
    desc: str | None = None,
    progress: bool = True,
    autocast_dtype: torch.dtype | None = None,
    spool: GramSpool | None = None,
) -> dict[str, ExtractedFeatures]:
    """:func:`extract_features` for several poolings in one pass: one recorder per pooling on the same forwards.

    Returns:
        pooling -> :class:`ExtractedFeatures`, in the order of ``pools`` (each with the pass's seconds).
    """
    device = torch.device(device)
    start = time.perf_counter()
    recorders = {
        pool: FeatureRecorder(model, layers=layers, pool=pool, tokens=tokens, layouts=layouts, precision=precision)
        for pool in dict.fromkeys(pools)
    }
    spooling = spool is not None and FLATTEN in recorders
    seen = 0
    with contextlib.ExitStack() as hooks:
        for recorder in recorders.values():
            hooks.enter_context(recorder)
        with (
            torch.inference_mode(),
            tqdm(total=total, desc=desc, unit="img", disable=not progress, leave=False) as bar,
        ):
            for batch in batches:
                batch = batch.to(device, non_blocking=True)
                if autocast_dtype is not None:
                    with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                        model(batch)
                else:
                    model(batch)
                if spooling:
                    spool.append(recorders[FLATTEN].take_grams())
                seen += len(batch)
                bar.update(len(batch))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    passes = {}
    for pool, recorder in recorders.items():
        if pool == FLATTEN:
            features = spool.features(device) if spooling else recorder.grams
        else:
            features = recorder.features
        passes[pool] = ExtractedFeatures(features=features, layers=recorder.describe(), n=seen, seconds=seconds)
    return passes


@dataclass(frozen=True)
class ModelRequest:
    """A model as a job names it.

    Attributes:
        name: alias or timm name.
        weights: ``"pretrained"`` or ``"random"`` (a checkpoint overrides it).
        checkpoint: local weights file, or ``None``.
        seed: initialisation seed of random weights.
        label: how tables and figures call it (default: ``name``).
        family: family label overriding the registry's (``cnn``, ``vit``, ``mlp``, ``hybrid``).
        checkpoint_select: which weights of a training checkpoint: ``auto``, ``student`` or ``ema``.
        num_classes: classifier size (``None``: ImageNet's, or the checkpoint's own).
        img_size: input resolution over the model's own preprocessing (``None``: a run checkpoint's own
            evaluation transform, else the model's timm pretrained config; see :func:`cka_probe.models.load_model`).
    """

    name: str
    weights: str = "pretrained"
    checkpoint: str | None = None
    seed: int = 0
    label: str | None = None
    family: str | None = None
    checkpoint_select: str = "auto"
    num_classes: int | None = None
    img_size: int | None = None

    @classmethod
    def from_argument(cls, name_or_path: str, checkpoint: str | None = None, **kwargs: Any) -> ModelRequest:
        """A request from what a user typed: a model name, or a training checkpoint that records its model."""
        name = name_or_path
        if checkpoint is None and Path(name_or_path).expanduser().is_file():  # a run's checkpoint records its model
            from ..models import name_and_checkpoint

            name, checkpoint = name_and_checkpoint(name_or_path, checkpoint)
        return cls(name, checkpoint=checkpoint, label=kwargs.pop("label", None) or name_or_path, **kwargs)

    @property
    def display(self) -> str:
        return self.label or self.name

    def load(self, device: torch.device | str, weights: str | None = None):
        """The requested model, built by :func:`cka_probe.models.load_model` on ``device`` (``weights``: the
        request's own unless given, e.g. ``"random"`` to check a name and a checkpoint without the hub)."""
        from ..models import load_model

        return load_model(
            self.name,
            weights=self.weights if weights is None else weights,
            checkpoint=self.checkpoint,
            seed=self.seed,
            device=device,
            checkpoint_select=self.checkpoint_select,
            num_classes=self.num_classes,
            img_size=self.img_size,
        )

    def key_record(self) -> dict[str, Any]:
        """What identifies this model's weights without building it (or downloading anything).

        ``checkpoint_sha256`` is the SHA-256 of a checkpoint; ``pretrained`` the pretrained tag timm resolves
        the name to, where the weights come from and the SHA-256 of their local file when it is in the hub
        cache (see :func:`cka_probe.models.pretrained_record`).
        """
        from ..models import pretrained_record, resolve_name

        spec = resolve_name(self.name)
        if self.checkpoint and not Path(self.checkpoint).expanduser().is_file():
            raise CheckpointError(
                f"checkpoint {self.checkpoint} does not exist; fix its path (the model's checkpoint: in the job "
                "config, or --checkpoint-a / --checkpoint-b of compare)"
            )
        checkpoint_sha = sha256_file_checked(self.checkpoint) if self.checkpoint else None
        weights = "checkpoint" if self.checkpoint else self.weights
        return {
            "name": self.name,
            "timm_name": spec.timm_name,
            "weights": weights,
            "checkpoint_sha256": checkpoint_sha,
            "checkpoint_select": self.checkpoint_select if self.checkpoint else None,
            "num_classes": self.num_classes,
            "pretrained": pretrained_record(spec.timm_name) if weights == "pretrained" else None,
            "seed": self.seed if weights == "random" else None,
            # the preprocessing: a run checkpoint's own (decided by its bytes, hashed above), else the model's
            # pretrained config, unless the user sets the size
            "preprocessing": {"rule": PREPROCESSING_RULE, "img_size": self.img_size},
        }


@dataclass(frozen=True)
class FeatureSettings:
    """What decides the recorded features besides the model and the images."""

    layers: Any = "activations"
    tokens: str = "patch"
    pool: str = "mean"
    layouts: tuple[tuple[str, str], ...] = ()
    batch_size: int | None = None
    precision: str = "float64"  # of the Grams of flattened layers; pooled features do not depend on it

    def record(self) -> dict[str, Any]:
        """The settings as recorded (and keyed in the cache); ``gram_precision`` only for flattened layers."""
        layers = self.layers if isinstance(self.layers, str) else list(self.layers)
        record = {
            "layers": layers,
            "tokens": self.tokens,
            "pool": self.pool,
            "layouts": [list(p) for p in self.layouts],
            "batch_size": self.batch_size,
        }
        if self.pool == FLATTEN:
            record["gram_precision"] = self.precision
        return record

    def recorder_options(self) -> dict[str, Any]:
        """These settings as :func:`extract_features` (and :class:`~cka_probe.capture.FeatureRecorder`) take them."""
        return {
            "layers": self.layers,
            "tokens": self.tokens,
            "pool": self.pool,
            "layouts": dict(self.layouts) or None,
            "precision": self.precision,
        }


def resolve_cache(cache: FeatureCache | str | Path | bool | None) -> FeatureCache | None:
    """``True``: the default cache directory; a path: that directory; ``False``/``None``: no cache.

    The directory is checked for writing here, so that a bad one fails before any model runs.
    """
    if cache is False or cache is None:
        return None
    store = cache if isinstance(cache, FeatureCache) else FeatureCache(None if cache is True else cache)
    store.check_writable()
    return store


def model_features(
    request: ModelRequest,
    probe,
    settings: FeatureSettings,
    *,
    device: torch.device | str = "cpu",
    cache: FeatureCache | None = None,
    progress: bool = True,
) -> ExtractedFeatures:
    """The pooled features of ``request``'s model on ``probe``: from the cache, or computed (and cached).

    ``extra["model"]`` holds the model's provenance, ``extra["cached"]`` whether the pass was skipped.
    """
    from ..data import batches
    from ..models import transform_for

    key = feature_key(request.key_record(), probe.provenance(), settings.record()) if cache is not None else None
    if key is not None:
        hit = cache.load(key)
        if hit is not None:
            return ExtractedFeatures(**hit).to(device)
    loaded = request.load(device)
    bounds = minibatch_bounds(probe.n, settings.batch_size)
    spool = gram_spool(settings.pool, len(bounds), cache)
    extracted = extract_features(
        loaded.model,
        (images for images, _ in batches(probe, transform_for(loaded), bounds=bounds)),
        **settings.recorder_options(),
        device=device,
        total=probe.n,
        desc=request.display,
        progress=progress,
        spool=spool,
    )
    if extracted.n != probe.n:
        raise CKAProbeError(f"{request.display} saw {extracted.n} images instead of {probe.n}")
    provenance = loaded.provenance()
    if request.family:
        provenance["family"] = request.family
    extracted.extra.update({"model": provenance, "cached": False})
    if key is not None:
        # pretrained weights downloaded just now have a local file to hash: store under the key that names it
        key = feature_key(request.key_record(), probe.provenance(), settings.record())
        extracted.extra["cache"] = str(cache.save(key, extracted))
    del loaded
    return extracted


@dataclass
class ModelFailure:
    """A model whose features could not be computed, and why."""

    label: str
    error: str
    kind: str

    def record(self) -> dict[str, str]:
        return {"label": self.label, "error": self.error, "error_type": self.kind}


def safe_model_features(
    request: ModelRequest, probe, settings: FeatureSettings, **kwargs
) -> ExtractedFeatures | ModelFailure:
    """:func:`model_features`, with a failure of this one model caught and described."""
    try:
        return model_features(request, probe, settings, **kwargs)
    except (KeyboardInterrupt, SystemExit):
        raise
    except Exception as exc:  # a zoo goes on past a model that cannot be built or run
        message = str(exc).splitlines()[0] if str(exc) else traceback.format_exception_only(exc)[-1].strip()
        return ModelFailure(label=request.display, error=message, kind=type(exc).__name__)


def model_provenance(extracted: ExtractedFeatures) -> dict[str, Any]:
    """The model record stored with its features (name, timm name, family, weights, ...)."""
    return dict(extracted.extra.get("model") or {})


def record_device(result: ExtractedFeatures | ModelFailure, device: torch.device) -> ExtractedFeatures | ModelFailure:
    """``result`` with ``device`` (where its features were computed, or loaded to from the cache) in its model's
    provenance; a failure is returned as it is."""
    if isinstance(result, ExtractedFeatures):
        result.extra["model"] = {**(result.extra.get("model") or {}), "device": str(device)}
    return result
