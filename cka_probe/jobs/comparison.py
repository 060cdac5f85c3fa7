"""``compare``: two networks in, the CKA of every recorded layer of one against every layer of the other out."""

from __future__ import annotations

import hashlib
import inspect
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._choices import POOLS, TOKENS
from ..engine.estimation import (
    CKASettings,
    check_pooling,
    minibatch_bounds,
    number_formats,
    pair_tables,
    pooling_description,
)
from ..engine.features import (
    ExtractedFeatures,
    FeatureSettings,
    ModelRequest,
    extract_features,
    model_features,
    resolve_cache,
    resolve_device,
)
from ..engine.provenance import TOKEN_RULES, output_header
from ..errors import ArgumentError, CKAProbeError, ConfigError, ShapeError
from .result import CKAResult
from .summary import DEFAULT_BAND

__all__ = ["Side", "compare", "side_labels", "TOKEN_RULES"]


@dataclass(frozen=True)
class Side:
    """One side of :func:`compare`: a model and what to record of it, the ``*_a`` or ``*_b`` keywords of one side
    in one value (``compare(Side("resnet18", checkpoint="run/best.pth"), "vit_s")``).

    Attributes:
        model: a model name (alias, timm name, or a training checkpoint that records its model) or a module.
        checkpoint: local weights for it (they override ``weights``).
        checkpoint_key: ``"auto"``, ``"student"`` or ``"ema"``: which weights of a training checkpoint.
        seed: its random-weights seed (``None``: compare's ``seed``).
        num_classes: its classifier size (``None``: the checkpoint's, else ImageNet's).
        img_size: its input resolution over its own preprocessing.
        layers: ``"activations"``, glob patterns or module names.
        tokens: its token rule (``None``: compare's ``tokens``).
        layouts: ``{layer pattern: layout}`` overrides.
        weights: ``"pretrained"`` or ``"random"`` for this side (``None``: compare's ``weights``), e.g. pretrained
            weights against the same network at initialisation.
    """

    model: Any
    checkpoint: str | None = None
    checkpoint_key: str = "auto"
    seed: int | None = None
    num_classes: int | None = None
    img_size: int | None = None
    layers: Any = "activations"
    tokens: str | None = None
    layouts: Mapping[str, str] | None = None
    weights: str | None = None


_PLAIN_SIDE = Side(None)


def _side(value: Any, key: str, **keywords: Any) -> Side:
    """``value`` as a :class:`Side`: a Side as it is (its keywords left at their defaults), else built from them."""
    if not isinstance(value, Side):
        return Side(value, **keywords)
    for name, given in keywords.items():
        if given != getattr(_PLAIN_SIDE, name):
            raise ArgumentError(f"model {key} is a Side: set {name} in it rather than {name}_{key}=")
    return value


def compare(
    a: str | nn.Module | Side,
    b: str | nn.Module | Side,
    data: Any = "embedded",
    *,
    n: int | None = None,
    batch_size: int | None = None,
    seed: int = 0,
    weights: str = "pretrained",
    checkpoint_a: str | None = None,
    checkpoint_b: str | None = None,
    layers_a: Any = "activations",
    layers_b: Any = "activations",
    tokens: str = "patch",
    tokens_a: str | None = None,
    tokens_b: str | None = None,
    layouts_a: Mapping[str, str] | None = None,
    layouts_b: Mapping[str, str] | None = None,
    pool: str = "mean",
    seed_a: int | None = None,
    seed_b: int | None = None,
    checkpoint_key_a: str = "auto",
    checkpoint_key_b: str = "auto",
    num_classes_a: int | None = None,
    num_classes_b: int | None = None,
    img_size_a: int | None = None,
    img_size_b: int | None = None,
    kernel: str = "linear",
    unbiased: bool = False,
    sigma_frac: float = 1.0,
    estimator: str = "full",
    precision: str = "float64",
    device: str | torch.device = "auto",
    skip_bad: bool = False,
    cache: Any = True,
    progress: bool = True,
) -> CKAResult:
    """CKA of every recorded layer of ``a`` (rows) against every recorded layer of ``b`` (columns).

    The defaults follow the OFA-KD supplementary, B.1: 128 images in one batch, features taken after
    every activation layer and averaged over their spatial dimensions, linear CKA.

    Args:
        a, b: model names (aliases such as ``mobilenetv2``, ``vit_s``, or any timm name), modules, or
            :class:`Side` values that carry one side's settings (then leave that side's ``*_a`` / ``*_b``
            keywords out).
        data: a probe source (``"embedded"``, a directory, ``"fashion-mnist[:DIR]"``, ``"imagenette"``,
            ``"synthetic"``), a tensor of prepared images ``(N, 3, H, W)`` fed to both models as is, or an
            iterable of such tensors (or of ``(images, labels)`` pairs, e.g. a DataLoader).
        n: number of images: a class-balanced, seeded subset of a source (``None``: the probe sets' default,
            128), or the first n of a tensor or an iterable (``None``: all the images they hold).
        batch_size: images per forward pass; ``None`` is all n in one batch, as in the paper.
        seed: subset choice, and the initialisation of ``weights="random"``.
        weights: ``"pretrained"`` (timm hub weights) or ``"random"``; a checkpoint overrides it per side.
        checkpoint_a, checkpoint_b: local weights (.pth, .pt, .safetensors): a state dict, a timm or
            official OFA-KD checkpoint, or a ``cka-probe train`` checkpoint. A model name may itself be
            such a file when it records its model (``compare("run/best.pth", "resnet18")``).
        checkpoint_key_a, checkpoint_key_b: which weights of a training checkpoint: ``"auto"``,
            ``"student"`` or ``"ema"``.
        num_classes_a, num_classes_b: classifier size (default: ImageNet's, or the checkpoint's own).
        img_size_a, img_size_b: one side's input resolution over its own preprocessing. Each model sees the
            same probe images prepared its own way: a ``cka-probe train`` checkpoint as the run's validation
            prepared them (its resolution, crop, interpolation, mean and std), any other model by its timm
            pretrained config; the provenance records each side's ``data_config`` and its source.
        layers_a, layers_b: ``"activations"``, glob patterns or module names.
        tokens: ``"patch"``, ``"all"`` or ``"cls"`` for token layers of models with prefix tokens;
            ``tokens_a`` / ``tokens_b`` set one side's own (e.g. a CNN against a ViT's class token).
        layouts_a, layouts_b: ``{layer pattern: layout}`` overrides for layers whose layout cannot be decided.
        pool: ``"mean"`` (the paper's), ``"max"``, or ``"flatten"`` (the whole activation).
        seed_a, seed_b: one side's random-weights seed (default ``seed``), e.g. two seeds of one architecture.
        kernel: ``"linear"`` or ``"rbf"``.
        unbiased: unbiased HSIC estimator (n >= 4).
        sigma_frac: RBF bandwidth fraction of the median distance.
        estimator: ``"full"`` (the default: CKA over all n images at once, whatever the batch size) or
            ``"minibatch"`` (Nguyen et al. 2021, over batches of ``batch_size``); see
            :mod:`cka_probe.engine.estimation`.
        precision: ``"float64"`` (the default) or ``"float32"`` arithmetic of the all-pairs product.
        device: ``"auto"`` (CUDA when there is a GPU), ``"cpu"`` or ``"cuda"``; the CKA runs there too.
        skip_bad: skip unreadable images (counted in the metadata) instead of failing.
        cache: feature cache for named models on a probe source: ``True`` (the default directory, see
            :mod:`cka_probe.engine.cache`), a directory, or ``False`` to compute without it.
        progress: show progress bars.

    Returns:
        A :class:`~cka_probe.jobs.result.CKAResult`.
    """
    started = time.perf_counter()
    inputs = None
    if n is None and (isinstance(data, str) or hasattr(data, "__fspath__")):
        from ..data import load_probe_set

        n = inspect.signature(load_probe_set).parameters["n"].default  # the probe sets' own default, defined there
    elif n is None:  # a tensor or a DataLoader: the images the caller handed over define n
        inputs = _Inputs(data, n=None, seed=seed, skip_bad=skip_bad, batch_size=batch_size)
        n = inputs.n
    settings = _check_settings(n, batch_size, kernel, unbiased, sigma_frac, estimator, precision)
    if pool not in POOLS:
        raise ConfigError(f"unknown pooling {pool!r}; choose --pool {', '.join(POOLS)}")
    check_pooling(pool, settings, n)
    spec = {
        key: _side(
            value,
            key,
            checkpoint=checkpoint,
            checkpoint_key=checkpoint_key,
            seed=side_seed,
            num_classes=classes,
            img_size=size,
            layers=layers,
            tokens=side_tokens,
            layouts=layouts,
        )
        for key, value, checkpoint, checkpoint_key, side_seed, classes, size, layers, side_tokens, layouts in (
            ("a", a, checkpoint_a, checkpoint_key_a, seed_a, num_classes_a, img_size_a, layers_a, tokens_a, layouts_a),
            ("b", b, checkpoint_b, checkpoint_key_b, seed_b, num_classes_b, img_size_b, layers_b, tokens_b, layouts_b),
        )
    }  # fmt: skip
    sides = {
        key: _Side(
            *_named(side.model, side.checkpoint),
            seed if side.seed is None else side.seed,
            side.checkpoint_key,
            side.num_classes,
            side.img_size,
            FeatureSettings(
                side.layers, _tokens(side.tokens or tokens), pool, _layouts(side.layouts), batch_size, precision
            ),
            side.weights or weights,
        )
        for key, side in spec.items()
    }
    device = resolve_device(device)
    label_a, label_b = side_labels(spec["a"], spec["b"])

    inputs = inputs or _Inputs(data, n=n, seed=seed, skip_bad=skip_bad, batch_size=batch_size)
    named = isinstance(sides["a"].model, str) and isinstance(sides["b"].model, str)
    same_model = named and sides["a"] == sides["b"]
    extracted = {}
    if inputs.probe is not None and named:
        store = resolve_cache(cache)
        for key, side in sides.items():
            if key == "b" and same_model:
                break
            extracted[key] = model_features(
                side.request(), inputs.probe, side.settings, device=device, cache=store, progress=progress
            )
    else:
        for key, side in sides.items():
            if key == "b" and same_model:
                break
            extracted[key] = _extract_direct(side, inputs, device=device, progress=progress)
    extracted_a = extracted["a"]
    extracted_b = extracted.get("b", extracted_a)
    model_a = {**extracted_a.extra["model"], "label": label_a}
    model_b = {**extracted_b.extra["model"], "label": label_b}
    _check_same_n(extracted_a, extracted_b, inputs.n)

    pair = ("a", "a" if same_model else "b")
    matrix = pair_tables({key: ext.features for key, ext in extracted.items()}, [pair], settings)[pair]
    matrix.index.name, matrix.columns.name = label_a, label_b
    result = CKAResult(matrix=matrix, metadata={})
    result.metadata = {
        **output_header(
            models={"a": model_a, "b": model_b},
            data=inputs.provenance(),
            n=inputs.n,
            seed=seed,
            batch_size=batch_size or inputs.n,
            layers={"a": extracted_a.layer_provenance(), "b": extracted_b.layer_provenance()},
            pools=[pool],
            pooling=pooling_description(pool),
            tokens={key: side.settings.tokens for key, side in sides.items()},
            settings=settings.record(),
            dtype=number_formats([pool], settings.precision),
            device=str(device),
            seconds={
                "features_a": round(extracted_a.seconds, 3),
                "features_b": round(extracted_b.seconds, 3),
                "features_from_cache": {
                    "a": bool(extracted_a.extra.get("cached")),
                    "b": bool(extracted_b.extra.get("cached")),
                },
                "total": round(time.perf_counter() - started, 3),
            },
        ),
        "weights": {"a": model_a["weights"], "b": model_b["weights"]},
        "weights_seed": {"a": sides["a"].seed, "b": sides["b"].seed},
        "layer_selection": {key: _spec_text(side.layers) for key, side in spec.items()},
        "layouts": {key: dict(side.settings.layouts) for key, side in sides.items()},
    }
    result.metadata["summary"] = {
        "diagonal_band_mean": result.diagonal_band_mean(),
        "band_width": DEFAULT_BAND,
        "mean": float(matrix.stack().mean()) if matrix.notna().any().any() else float("nan"),
    }
    return result


# --------------------------------------------------------------------------- internals


def _check_settings(n, batch_size, kernel, unbiased, sigma_frac, estimator, precision="float64") -> CKASettings:
    return CKASettings(
        kernel=kernel,
        unbiased=bool(unbiased),
        sigma_frac=sigma_frac,
        estimator=estimator,
        batch_size=batch_size,
        precision=precision,
    ).check(n)


def _tokens(rule: str) -> str:
    if rule not in TOKENS:
        raise ConfigError(f"unknown token rule {rule!r}; choose --tokens {', '.join(TOKENS)}")
    return rule


def _layouts(layouts: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    return tuple((layouts or {}).items())  # in the order given: the first matching pattern wins


@dataclass(frozen=True)
class _Side:
    """One side of a comparison: the model, its weights and what to record of it."""

    model: Any
    checkpoint: str | None
    seed: int
    checkpoint_key: str
    num_classes: int | None
    img_size: int | None
    settings: FeatureSettings
    weights: str

    def request(self) -> ModelRequest:
        """The model of this side as the engine builds models (:meth:`ModelRequest.load`)."""
        return ModelRequest(
            self.model,
            self.weights,
            self.checkpoint,
            self.seed,
            checkpoint_select=self.checkpoint_key,
            num_classes=self.num_classes,
            img_size=self.img_size,
        )


def _named(model: Any, checkpoint: str | None) -> tuple[Any, str | None]:
    """A model argument that is a training checkpoint becomes the model it records and that file."""
    if not isinstance(model, str):
        return model, checkpoint
    from ..models import name_and_checkpoint

    return name_and_checkpoint(model, checkpoint)


def side_labels(
    a: Any,
    b: Any,
    checkpoint_a: str | None = None,
    checkpoint_b: str | None = None,
    checkpoint_key_a: str = "auto",
    checkpoint_key_b: str = "auto",
) -> tuple[str, str]:
    """How a comparison calls its two sides in the title, the axis labels and the default file stem.

    A model without a checkpoint is its name; one with a checkpoint adds the file's folder and name, ``EMA``
    when its EMA weights are taken, and the epoch a training checkpoint had reached
    (``"resnet18 · seed0/best.pth (epoch 7)"``), so two runs of one architecture read apart. Two files whose
    folder and name agree show more of their paths.

    ``a`` and ``b`` may be :class:`Side` values, which carry their checkpoints and keys.

    >>> side_labels("resnet18", "vit_s")
    ('resnet18', 'vit_s')
    """
    from ..models import checkpoint_label

    given = [
        (side.model, side.checkpoint, side.checkpoint_key) if isinstance(side, Side) else (side, checkpoint, select)
        for side, checkpoint, select in ((a, checkpoint_a, checkpoint_key_a), (b, checkpoint_b, checkpoint_key_b))
    ]
    sides = []
    for model, checkpoint, select in given:
        name, path = _named(os.fspath(model) if isinstance(model, os.PathLike) else model, checkpoint)
        if not isinstance(name, str):
            attached = getattr(name, "cka_probe_checkpoint", None)  # a module built by model_from_checkpoint
            name = type(name).__name__
            path = getattr(attached, "path", None) if path is None else path
        sides.append((name, path, *(_checkpoint_facts(path, select) if path else (None, False))))
    paths = [Path(path).expanduser().resolve() if path else None for _, path, _, _ in sides]
    parts = 2
    if all(paths) and paths[0] != paths[1]:
        longest = max(len(p.parts) for p in paths)
        while parts < longest and paths[0].parts[-parts:] == paths[1].parts[-parts:]:
            parts += 1
    labels = []
    for (name, _path, epoch, ema), resolved in zip(sides, paths):
        labels.append(f"{name} · {checkpoint_label(resolved, epoch, ema, parts)}" if resolved else name)
    return labels[0], labels[1]


def _checkpoint_facts(path: str, select: str) -> tuple[int | None, bool]:
    """The epoch a checkpoint records (a run's, or a timm ``CheckpointSaver``'s) and whether ``select`` takes EMA weights."""
    from ..models import EMA_KEYS, read_checkpoint, select_state_dict

    checkpoint = read_checkpoint(path)
    selected = select_state_dict(checkpoint, path, select)
    epoch = selected.run.epoch if selected.run is not None else checkpoint.get("epoch")
    epoch = epoch if isinstance(epoch, int) and not isinstance(epoch, bool) else None
    return epoch, selected.key in EMA_KEYS


def _extract_direct(side: _Side, inputs: _Inputs, *, device, progress):
    """Features of a module (or a named model on caller-given tensors), without the cache."""
    from ..models import transform_for

    loaded = side.request().load(device)
    extracted = extract_features(
        loaded.model,
        inputs.batches(transform_for(loaded)),
        **side.settings.recorder_options(),
        device=device,
        total=inputs.n,
        desc=loaded.name,
        progress=progress,
    )
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

    def __init__(self, data: Any, *, n: int | None, seed: int, skip_bad: bool, batch_size: int | None) -> None:
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
                raise ShapeError(
                    f"n={n} but the tensor holds {len(data)} images; pass n <= {len(data)}, or leave n out (the "
                    "tensor's images define it)"
                )
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

            for images, _ in batches(self.probe, transform, bounds=minibatch_bounds(self.n, self.batch_size)):
                yield images
            return
        for start, stop in minibatch_bounds(self.n, self.batch_size):
            yield self.tensor[start:stop]

    def provenance(self) -> dict[str, Any]:
        if self.probe is not None:
            return self.probe.provenance()
        tensor = self.tensor.detach().cpu().contiguous()
        header = f"{tuple(tensor.shape)} {tensor.dtype}".encode()
        digest = hashlib.sha256(header + tensor.reshape(-1).view(torch.uint8).numpy().tobytes()).hexdigest()
        return {
            "source": "tensor given by the caller (prepared by the caller, fed to both models as is)",
            "kind": "tensor",
            "n": self.n,
            "image_list_sha256": digest,
            "synthetic": False,
        }


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
        raise ShapeError(
            f"n={n} but the data loader yielded {len(images)} images; pass n <= {len(images)}, or leave n out (the "
            "loader's images define it)"
        )
    return images[:n] if n is not None else images
