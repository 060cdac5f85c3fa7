"""Record pooled activations of a model's layers while it runs: :class:`FeatureRecorder`.

The recorder hooks the selected modules (see :mod:`~cka_probe.capture.selection`) and pools each
output to ``(N, C)`` float32 inside the hook (see :mod:`~cka_probe.capture.pooling`), using the
layout its rules decide (see :mod:`~cka_probe.capture.layouts`). Two hooks on the model itself mark
where one forward begins and ends:

* a module called several times in one forward (torchvision's ``BasicBlock.relu``) is recorded once
  per call, as ``name``, ``name#2``, ``name#3``, ... in call order;
* a forward's records are kept only when the forward returns, all layers together, so the rows of
  every layer stay in step; a forward that raises leaves nothing behind;
* every batch must run the same layers in the same order as the first, or :class:`CaptureError`;
* a hooked module run outside a forward of the model (a submodule or ``forward_features`` called
  directly) is a :class:`CaptureError`: the model itself must be called.

With ``pool="flatten"`` the hook keeps no features: it reduces each output at once to the
``(b, b)`` float64 linear Gram of the batch's centred, flattened features
(:func:`~cka_probe.capture.pooling.flattened_gram`) and drops the activation. The recorder then
holds one Gram per layer and forward, :attr:`FeatureRecorder.grams`: ``O(L b^2)`` numbers per forward for
``L`` layers and batches of ``b``, whatever the spatial size (taken after every batch with
:meth:`FeatureRecorder.take_grams`, ``O(L b^2)`` in all, whatever the number of batches). A layer whose
flattened width changes between batches (the input size changed) is a
:class:`~cka_probe.errors.FlattenWidthError`.

Calls whose output does not have one row per image (its first axis differs from the batch size of
the model's input) are not features: explicitly selected layers raise :class:`ShapeError`, and the
default activation set skips them with a warning, listing them in :attr:`FeatureRecorder.skipped`.

Token layers (``NLC``) have their prefix tokens decided per layer from the token count the layer
sees (see :func:`~cka_probe.capture.layouts.resolve_layout`): ConViT's blocks before its class
token, and CaiT's and XCiT's patch-only blocks, have none. ``tokens="cls"`` on such a layer is a
:class:`LayerSelectionError` naming it; ``tokens="patch"`` on a layer that sees only class tokens
(CaiT's class-attention MLP) skips it in the default set (see :attr:`FeatureRecorder.skipped`)
and raises for an explicit selection.
"""

from __future__ import annotations

import fnmatch
import functools
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Self

import torch
from torch import nn

from .._choices import POOLS, PRECISIONS, TOKENS
from ..errors import ArgumentError, CaptureError, FlattenWidthError, LayerSelectionError, ShapeError
from .layouts import TOKEN_LAYOUT, LayerLayout, ancestors_of, class_token_counts, parse_layouts, resolve_layout
from .pooling import FLATTEN, _gram, _pool  # the settings were checked once, in __init__
from .selection import DEFAULT_LAYERS, LayerSpec, no_match_message, select_layers

__all__ = ["FeatureRecorder", "LayerInfo", "describe_layers"]

# Modules whose (N, C, H, W) outputs are the patch grids of token models (patch embeddings, PiT's pooling).
_GRID_MAKERS = (nn.Conv2d, nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)


@dataclass(frozen=True)
class LayerInfo:
    """What one recorded layer is, without its features.

    Attributes:
        name: the layer's label: the module name, with ``#k`` for its k-th call in one forward.
        module_name: the qualified module name (``model.get_submodule(module_name)``).
        module_type: the module's class, qualified (``"timm.layers.activations.GELU"``).
        layout: the layout its output was pooled with (``"NCHW"``, ``"NLC"``, ...).
        prefix_tokens: prefix tokens left out by ``tokens="patch"`` (token layouts only).
        layout_source: the rule that decided the layout.
        raw_shape: shape of the output in the first batch, batch first.
        pooled_dim: number of features per example: ``C`` pooled, or the flattened width
            (``C*H*W``, ``T*C``, ...) with ``pool="flatten"``.
    """

    name: str
    module_name: str
    module_type: str
    layout: str
    prefix_tokens: int
    layout_source: str
    raw_shape: tuple[int, ...]
    pooled_dim: int


class FeatureRecorder:
    """Records pooled ``(n, C)`` features (or, flattened, per-batch Grams) of a model's layers over forwards.

    Use it as a context manager (hooks are removed on exit, also when an exception leaves the
    block) or call :meth:`attach` and :meth:`remove` yourself. Every ``model(x)`` inside adds
    ``len(x)`` rows to every layer.

    Args:
        model: the network; hooks go on it and its submodules.
        layers: ``"activations"`` (every activation module, gates such as the sigmoid of a
            squeeze-excite left out), a glob pattern or module name, a list of them, or a
            predicate ``(name, module) -> bool``; see :mod:`~cka_probe.capture.selection`.
        pool: ``"mean"`` or ``"max"`` over the spatial positions or tokens, or ``"flatten"``: every
            position kept, recorded as one ``(b, b)`` float64 Gram per batch (:attr:`grams`), never as
            features.
        tokens: for token layers of models with class tokens (:func:`~cka_probe.capture.layouts.class_token_counts`):
            ``"patch"`` pools the patch tokens, ``"all"`` every token, ``"cls"`` keeps the class token;
            the prefix tokens are decided per layer.
        layouts: overrides of the layout rules, matched against module names: ``{glob: layout}``
            or ``PATTERN=LAYOUT`` strings (:func:`~cka_probe.capture.layouts.parse_layouts`);
            see :mod:`~cka_probe.capture.layouts`.
        precision: with ``pool="flatten"``, ``"float64"`` (default) or ``"float32"`` arithmetic of the
            Grams (:func:`~cka_probe.capture.pooling.flattened_gram`); pooled features are float32 anyway.

    Raises:
        ArgumentError: an unknown ``pool``, ``tokens`` or ``precision``.
        LayerSelectionError: a pattern of ``layers`` or ``layouts`` matches no module, nothing is
            selected, an unknown layout is named, or ``tokens="cls"`` for a model without class tokens.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 62 * 62, 4), nn.GELU())
        >>> with FeatureRecorder(net) as rec, torch.no_grad():
        ...     _ = net(torch.randn(2, 3, 64, 64))
        ...     _ = net(torch.randn(3, 3, 64, 64))
        >>> {name: tuple(f.shape) for name, f in rec.features.items()}
        {'1': (5, 8), '4': (5, 4)}
        >>> rec.layouts["1"].layout, rec.layouts["4"].layout
        ('NCHW', 'NC')
        >>> with FeatureRecorder(net, pool="flatten") as rec, torch.no_grad():
        ...     _ = net(torch.randn(2, 3, 64, 64))
        ...     _ = net(torch.randn(3, 3, 64, 64))
        >>> {name: [tuple(g.shape) for g in grams] for name, grams in rec.grams.items()}, rec.widths
        ({'1': [(2, 2), (3, 3)], '4': [(2, 2), (3, 3)]}, {'1': 30752, '4': 4})
    """

    def __init__(
        self,
        model: nn.Module,
        layers: LayerSpec = DEFAULT_LAYERS,
        pool: str = "mean",
        tokens: str = "patch",
        layouts: Mapping[str, str] | Sequence[str] | None = None,
        precision: str = "float64",
    ) -> None:
        if pool not in POOLS:
            raise ArgumentError(f"unknown pool {pool!r}; choose --pool {', '.join(POOLS)}")
        if precision not in PRECISIONS:
            raise ArgumentError(f"unknown precision {precision!r}; choose --precision {', '.join(PRECISIONS)}")
        if tokens not in TOKENS:
            raise ArgumentError(f"unknown tokens {tokens!r}; choose --tokens {', '.join(TOKENS)}")
        self.model = model
        self.pool = pool
        self.tokens = tokens
        self.precision = precision
        self.overrides = parse_layouts(layouts)
        self._explicit = not (isinstance(layers, str) and layers == DEFAULT_LAYERS)
        self.module_names: tuple[str, ...] = tuple(select_layers(model, layers))
        if not self.module_names:
            raise LayerSelectionError(
                f"the layer selection finds no module in {type(model).__name__}; "
                "select layers by name or glob pattern (see model.named_modules())"
            )
        self._check_overrides()
        self.class_tokens = class_token_counts(model)
        if tokens == "cls" and not self.class_tokens:
            raise LayerSelectionError(
                f"--tokens cls needs a class token, but {type(model).__name__} has none "
                "(no num_prefix_tokens, no cls_token parameter); use --tokens patch or all"
            )
        self._ancestors = {name: ancestors_of(model, name) for name in self.module_names}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []
        self.reset()

    # ----------------------------------------------------------------------- lifecycle

    def attach(self) -> FeatureRecorder:
        """Register the hooks; returns ``self``.

        Raises:
            CaptureError: the recorder is already attached.
        """
        if self._handles:
            raise CaptureError("the recorder is already attached to the model; call remove() before attaching again")
        try:
            self._handles.append(self.model.register_forward_pre_hook(self._begin_forward, with_kwargs=True))
            for name in self.module_names:
                module = self.model.get_submodule(name)
                self._handles.append(module.register_forward_hook(functools.partial(self._record, name)))
            if self.class_tokens:  # the patch grids, to tell class tokens from patches in token layers
                for module in self.model.modules():
                    if isinstance(module, _GRID_MAKERS):
                        self._handles.append(module.register_forward_hook(self._note_grid))
            self._handles.append(self.model.register_forward_hook(self._commit_forward))
            self._handles.append(self.model.register_forward_hook(self._finish_forward, always_call=True))
        except BaseException:
            self.remove()
            raise
        return self

    def remove(self) -> None:
        """Remove every hook; the features recorded so far stay."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._start_forward_state()

    @property
    def attached(self) -> bool:
        """Whether the hooks are on the model."""
        return bool(self._handles)

    def reset(self) -> None:
        """Forget every recorded batch, the layer order and the layouts; the hooks stay as they are."""
        self._chunks: dict[str, list[torch.Tensor]] = {}  # pooled features, or Grams with pool="flatten"
        self._batch_sizes: list[int] = []
        self._layers: tuple[str, ...] | None = None
        self._layouts: dict[str, LayerLayout] = {}
        self._info: dict[str, LayerInfo] = {}
        self._skipped: dict[str, str] = {}
        self.num_batches = 0
        self.num_examples = 0
        self._depth = 0
        self._start_forward_state()

    def __enter__(self) -> Self:
        self.attach()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.remove()

    def __repr__(self) -> str:
        return (
            f"FeatureRecorder({type(self.model).__name__}, {len(self.module_names)} modules, "
            f"{len(self.layers)} layers, n={self.num_examples}, attached={self.attached})"
        )

    # ----------------------------------------------------------------------- results

    @property
    def layers(self) -> tuple[str, ...]:
        """Recorded layer labels in forward (call) order; empty before the first forward."""
        return self._layers or ()

    @property
    def features(self) -> dict[str, torch.Tensor]:
        """Layer label -> ``(n, C)`` float32 features, in forward order, rows in batch order.

        Raises:
            CaptureError: the recorder flattens (``pool="flatten"`` keeps Grams, see :attr:`grams`).
        """
        if self.pool == FLATTEN:
            raise CaptureError(
                'a recorder with pool="flatten" keeps no features, only one Gram per layer and batch; '
                "read rec.grams, or record with --pool mean or max"
            )
        features = {}
        for label in self.layers:
            chunks = self._chunks[label]
            if len(chunks) > 1:
                chunks[:] = [torch.cat(chunks)]
            if chunks[0].is_inference():  # recorded under torch.inference_mode(): a clone here is a normal tensor
                chunks[0] = chunks[0].clone()
            features[label] = chunks[0]
        return features

    @property
    def grams(self) -> dict[str, list[torch.Tensor]]:
        """Layer label -> one ``(b_k, b_k)`` float64 Gram per recorded forward, in forward and batch order.

        Each is ``X_c X_c^T`` for the batch's flattened features ``X`` centred over the batch (see
        :func:`~cka_probe.capture.pooling.flattened_gram`); batch ``k`` holds ``batch_sizes[k]``
        examples. One batch of all ``n`` images gives the full Gram of the biased CKA estimator; several
        give what the minibatch estimator of Nguyen et al. (2021) needs.

        Raises:
            CaptureError: the recorder pools (``pool="mean"`` or ``"max"``; see :attr:`features`).
        """
        if self.pool != FLATTEN:
            raise CaptureError(
                f'a recorder with pool="{self.pool}" keeps pooled features, not Grams; read rec.features, '
                "or record with --pool flatten"
            )
        return {label: list(self._chunks[label]) for label in self.layers}

    def take_grams(self) -> dict[str, list[torch.Tensor]]:
        """:attr:`grams` recorded since the last call, then forgotten: streaming over many batches in ``O(L b^2)``.

        The layer order, layouts and widths stay, so later batches are still checked against the first;
        :attr:`batch_sizes` and :attr:`num_examples` keep counting every batch.

        Example:
            >>> import torch
            >>> from torch import nn
            >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
            >>> with FeatureRecorder(net, pool="flatten") as rec, torch.no_grad():
            ...     for _ in range(3):
            ...         _ = net(torch.randn(8, 3, 6, 6))
            ...         grams = rec.take_grams()  # feed them to MinibatchCKA.update as math.Gram
            >>> [tuple(g.shape) for g in grams["1"]], rec.num_examples, len(rec.grams["1"])
            ([(8, 8)], 24, 0)
        """
        grams = self.grams
        for label in self.layers:
            self._chunks[label] = []
        return grams

    @property
    def widths(self) -> dict[str, int]:
        """Layer label -> features per example: ``C`` pooled, or the flattened width with ``pool="flatten"``."""
        return {label: self._info[label].pooled_dim for label in self.layers}

    @property
    def batch_sizes(self) -> tuple[int, ...]:
        """Examples in each recorded forward, in order (they add up to :attr:`num_examples`)."""
        return tuple(self._batch_sizes)

    @property
    def layouts(self) -> dict[str, LayerLayout]:
        """Layer label -> the layout its output was pooled with, and the rule that decided it."""
        return {label: self._layouts[label] for label in self.layers}

    @property
    def skipped(self) -> dict[str, str]:
        """Calls of default-selected layers left out because they are not per-image: label -> why."""
        return dict(self._skipped)

    def describe(self) -> list[LayerInfo]:
        """One :class:`LayerInfo` per recorded layer, in forward order.

        Raises:
            CaptureError: no forward has been recorded yet.
        """
        if self._layers is None:
            raise CaptureError("no forward recorded yet; run model(x) while the recorder is attached, then describe()")
        return [self._info[label] for label in self._layers]

    # ----------------------------------------------------------------------- hooks

    def _start_forward_state(self) -> None:
        self._calls: Counter[str] = Counter()
        # (label, pooled features or flattened Gram, features per example, output shape, layout)
        self._pending: list[tuple[str, torch.Tensor, int, tuple[int, ...], LayerLayout]] = []
        self._pending_skipped: dict[str, str] = {}
        self._batch_size: int | None = None
        self._image_size: tuple[int, int] | None = None
        self._grids: set[int] = set()

    def _begin_forward(self, model: nn.Module, args: tuple, kwargs: dict) -> None:
        if self._depth == 0:
            self._start_forward_state()
            first = next((a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None)
            if first is not None and first.ndim >= 1:
                self._batch_size = int(first.shape[0])
                if first.ndim == 4:
                    self._image_size = (int(first.shape[2]), int(first.shape[3]))
        self._depth += 1

    def _note_grid(self, module: nn.Module, args: tuple, output: Any) -> None:
        if self._depth and isinstance(output, torch.Tensor) and output.ndim == 4:
            self._grids.add(int(output.shape[2]) * int(output.shape[3]))

    def _record(self, name: str, module: nn.Module, args: tuple, output: Any) -> None:
        if self._depth == 0:
            raise CaptureError(
                f"layer {name} ran outside a forward of {type(self.model).__name__}; call the model itself, "
                "model(x), not a submodule or a method such as forward_features"
            )
        self._calls[name] += 1
        call = self._calls[name]
        label = name if call == 1 else f"{name}#{call}"
        if not isinstance(output, torch.Tensor):
            raise ShapeError(
                f"layer {label} returned {type(output).__name__}, not a tensor; select a module that returns one tensor"
            )
        shape = tuple(output.shape)
        if self._batch_size is not None and (output.ndim == 0 or shape[0] != self._batch_size):
            reason = f"output {shape} does not have one row per image (batch of {self._batch_size})"
            if not self._explicit:
                self._pending_skipped[label] = reason
                return
            raise ShapeError(f"layer {label}: {reason}; select a layer whose output is batch first")
        layout = self._layouts.get(label)
        if layout is None:
            layout = resolve_layout(
                name,
                module,
                shape,
                self._ancestors[name],
                self.overrides,
                self._image_size,
                self.class_tokens,
                self.tokens,
                self._grids,
            )
        if layout.layout == TOKEN_LAYOUT and self.class_tokens:
            reason = self._token_refusal(label, shape, layout)
            if reason is not None:
                self._pending_skipped[label] = reason
                return
        if self.pool == FLATTEN:
            recorded, width = _gram(output, layout.layout, layout.prefix_tokens, self.tokens, self.precision)
        else:
            recorded = _pool(output, layout.layout, layout.prefix_tokens, self.tokens, self.pool)
            width = int(recorded.shape[1])
        self._pending.append((label, recorded, width, shape, layout))

    def _token_refusal(self, label: str, shape: tuple[int, ...], layout: LayerLayout) -> str | None:
        """Why a token layer cannot give what ``tokens`` asks for: a reason to skip it, or raise.

        ``tokens="cls"`` on a layer without a class token (ConViT before its class token is added,
        CaiT's and XCiT's patch-only blocks) raises. ``tokens="patch"`` on a layer that sees only
        class tokens (CaiT's and XCiT's class-attention MLPs, CrossViT's class-token projections)
        is skipped in the default set and raises for an explicit selection.
        """
        count = shape[1]
        if self.tokens == "cls" and layout.prefix_tokens == 0:
            raise LayerSelectionError(
                f"layer {label} has no class token (its {count} tokens are all patches; the class token comes "
                "later in the model); with --tokens cls select only layers that have one with --layers, "
                "or use --tokens patch or all"
            )
        if self.tokens == "patch" and layout.prefix_tokens == count:
            reason = f"its {count} token(s) are class tokens only, no patch token to pool"
            if self._explicit:
                raise LayerSelectionError(
                    f"layer {label}: {reason}; use --tokens cls or all, or leave it out of --layers"
                )
            return reason
        return None

    def _commit_forward(self, model: nn.Module, args: tuple, output: Any) -> None:
        if self._depth != 1:
            return
        pending = self._pending
        labels = tuple(label for label, *_ in pending)
        if self._layers is None:
            if not labels:
                raise CaptureError(
                    f"none of the {len(self.module_names)} selected modules produced a feature in this forward "
                    f"of {type(self.model).__name__}; check the layer selection"
                )
        elif labels != self._layers:
            raise CaptureError(_mismatch_message(self._layers, labels, self.num_batches + 1))
        rows = {recorded.shape[0] for _, recorded, *_ in pending}
        if len(rows) > 1:
            raise ShapeError(
                f"layers gave different numbers of rows {sorted(rows)} in one forward; select batch-first layers"
            )
        if self._layers is None:
            self._first_batch(pending)
        else:
            for label, _, width, shape, _ in pending:
                expected = self._info[label].pooled_dim
                if width != expected and self.pool == FLATTEN:
                    raise FlattenWidthError(
                        f"layer {label} has {width} flattened features in batch {self.num_batches + 1} but {expected} "
                        f"in the first (output {shape}): the input size changed; use --pool mean or a fixed input size"
                    )
                if width != expected:
                    raise CaptureError(
                        f"layer {label} gave {width} features in batch {self.num_batches + 1} but {expected} "
                        f"in the first (output {shape}); keep the model and input format the same for every batch"
                    )
        for label, recorded, *_ in pending:
            self._chunks.setdefault(label, []).append(recorded)
        batch_rows = rows.pop()
        self._batch_sizes.append(batch_rows)
        self.num_batches += 1
        self.num_examples += batch_rows

    def _first_batch(self, pending: list) -> None:
        self._layers = tuple(label for label, *_ in pending)
        for label, _, width, shape, layout in pending:
            module_name = label.split("#", 1)[0]
            cls = type(self.model.get_submodule(module_name))
            self._layouts[label] = layout
            self._info[label] = LayerInfo(
                name=label,
                module_name=module_name,
                module_type=f"{cls.__module__}.{cls.__qualname__}",
                layout=layout.layout,
                prefix_tokens=layout.prefix_tokens,
                layout_source=layout.source,
                raw_shape=shape,
                pooled_dim=width,
            )
        self._skipped = dict(self._pending_skipped)
        if self._skipped:
            first, why = next(iter(self._skipped.items()))
            warnings.warn(
                f"skipped {len(self._skipped)} activation call(s) that give no per-image feature, e.g. {first}: {why}; "
                "see FeatureRecorder.skipped",
                UserWarning,
                stacklevel=2,
            )

    def _finish_forward(self, model: nn.Module, args: tuple, output: Any) -> None:
        self._depth -= 1
        if self._depth == 0:
            self._start_forward_state()

    def _check_overrides(self) -> None:
        names = [name for name, _ in self.model.named_modules() if name]
        for pattern in self.overrides:
            if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
                raise LayerSelectionError(
                    no_match_message(pattern, names, type(self.model).__name__, "--layouts-a/-b (or --layouts) pattern")
                )


def describe_layers(
    model: nn.Module,
    example_input: torch.Tensor,
    layers: LayerSpec = DEFAULT_LAYERS,
    pool: str = "mean",
    tokens: str = "patch",
    layouts: Mapping[str, str] | None = None,
) -> list[LayerInfo]:
    """Describe the layers a :class:`FeatureRecorder` would record, from one forward of ``example_input``.

    The forward runs under ``torch.no_grad()`` and keeps no features. The model's mode is left as
    it is: put it in ``eval()`` first, as a training-mode forward updates BatchNorm statistics.

    Args:
        model: the network.
        example_input: one input batch (a single image is enough: shape ``(1, 3, H, W)``).
        layers: as in :class:`FeatureRecorder`.
        pool: as in :class:`FeatureRecorder`.
        tokens: as in :class:`FeatureRecorder`.
        layouts: as in :class:`FeatureRecorder`.

    Returns:
        One :class:`LayerInfo` per layer, in forward order.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
        >>> [(i.name, i.layout, i.raw_shape, i.pooled_dim) for i in describe_layers(net, torch.randn(1, 3, 8, 8))]
        [('2', 'NCHW', (1, 4, 6, 6), 4)]
    """
    recorder = FeatureRecorder(model, layers=layers, pool=pool, tokens=tokens, layouts=layouts)
    with torch.no_grad(), recorder:
        model(example_input)
    return recorder.describe()


def _mismatch_message(expected: tuple[str, ...], got: tuple[str, ...], batch: int) -> str:
    position = next((i for i, (a, b) in enumerate(zip(expected, got)) if a != b), min(len(expected), len(got)))
    want = expected[position] if position < len(expected) else "the end of the forward"
    saw = got[position] if position < len(got) else "the end of the forward"
    return (
        f"batch {batch} ran {len(got)} layers where the first batch ran {len(expected)}: at position {position} "
        f"came {saw} instead of {want}; the model's forward must run the same layers for every batch "
        "(check for input-dependent branches, or call reset() between different inputs)"
    )
