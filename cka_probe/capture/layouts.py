"""Which axis of a recorded activation holds the channels, and which axes are positions.

A recorded output is pooled to ``(N, C)`` over its spatial positions, so the recorder must know its
layout. The layouts (:data:`LAYOUTS`) are:

======  ============  ==================  ==========================================
layout  channel axis  pooled axes         seen in
======  ============  ==================  ==========================================
NC      1             none                heads, pooled features
NCL     1             2                   Conv1d; MLP-Mixer token mixing (see below)
NLC     2             1 (tokens)          ViT/DeiT, Swin, Mixer channel mixing
NCHW    1             2, 3                conv nets
NHWC    3             1, 2                ConvNeXt MLP, MambaOut
NCDHW   1             2, 3, 4             3-D conv nets
NDHWC   4             1, 2, 3             channels-last 3-D maps
======  ============  ==================  ==========================================

``NLC`` is the only token layout: only there are prefix tokens (class, distillation, register
tokens) told apart from patch tokens. Their number is decided **per layer**, from the number of
tokens that layer sees, checked against the model's structure (:func:`class_token_counts` and
the patch grids the model made before the layer; see :func:`_prefix_for`), not from one
model-wide attribute: ConViT adds its class token only at block 10, CaiT and XCiT run their main
blocks on patches alone and their class-attention MLPs on the class token alone, and CrossViT, PiT
and CoaT have class tokens but no ``num_prefix_tokens``. A model without class tokens has none.

Each hooked module's layout is decided once, at its first call, by the first of these rules that
decides:

1. **Override.** ``layouts={glob: layout}`` given by the user (or ``PATTERN=LAYOUT`` strings,
   :func:`parse_layouts`); the first pattern (in order) that matches the module's qualified name
   wins. Its rank must match the output's. A token layout still has its prefix decided per layer.
2. **Rank 2.** A 2-D output is ``NC``, kept as it is.
3. **Family rules**, keyed on the class of an ancestor module:

   * timm ``MixerBlock.mlp_tokens``: the token-mixing MLP sees ``(N, C, T')``, where ``T'`` (the
     token-mixing hidden width) replaced the token axis and mixes spatial positions. Layout
     ``NCL``: pooled over ``T'``, the ``C`` channels kept. (The channel-mixing MLP sees ordinary
     ``(N, T, C)`` tokens and is decided by rule 4.)
   * timm ``AttentionPoolLatent``: its MLP sees the latent query tokens, which carry no prefix
     tokens: ``NLC`` with no prefix exclusion.

4. **Structure**: the module that produced the activation's input. A *producer* is a class whose
   channel axis is known: channels first for convolutions, batch/group/instance norms (timm's
   ``BatchNormAct2d`` and friends included), pools, timm's ``LayerNorm2d``/``RmsNorm2d``/
   ``ConvNormAct``; channels last for ``Linear``, ``LayerNorm``, ``RMSNorm`` and timm's
   ``RmsNorm``/``LayerNormAct``. In order:

   a. the module is itself a producer (a selected ``Linear`` or ``Conv2d``);
   b. its parent is a producer (timm's ``BatchNormAct2d.act``: the norm runs first);
   c. the nearest preceding sibling in the parent, skipping shape-preserving modules (``Identity``,
      dropouts, ``DropPath``, ``LayerScale``, other activations), is a producer: ``fc1 -> act``
      in an ``Mlp`` is channels last, ``bn1 -> relu`` channels first. A convolution whose map
      was flattened before the module (an output of another rank than the convolution's) decides
      only when its channel count is on exactly one axis: the last for PVT-v2's
      ``fc1 -> dwconv -> flatten(2).transpose(1, 2) -> act`` (channels last); as many tokens as
      channels (16 x 16 tokens of 256 channels) fall through to rule 5. A
      preceding composite block (timm's ``ConvNorm``, StarNet's ``ConvBN``) counts by its last
      producer;
   c'. when the module runs first in its parent (nothing but shape-preserving modules before it),
      or rule c's flattened map had as many positions as channels, the nearest following
      sibling, skipping the same modules, *consumes* the output: it, or
      its first producer (``SeparableConv2d``'s depthwise convolution), takes the output's
      channel count (``in_channels``, ``in_features``, ``num_features``) on its side. NASNet's
      ``act -> separable conv`` branches and ``ActConvBn`` (activation first) are decided so,
      whatever their unpadded map sizes (111 x 111 at 224 px);
   d. every producer inside the parent has the same channel side (a reused module such as
      torchvision's ``BasicBlock.relu`` or HRNet's ``fuse_act``, whose later calls follow other
      layers).

   A producer decides only when its channel count (``out_features``, ``out_channels``,
   ``num_features``, ...; in rule d also the input counts) equals the output's size on the axis it
   claims as channels; otherwise the rule falls through. The side and the rank give the layout:
   channels first ``NCL``/``NCHW``/``NCDHW``, channels last ``NLC``/``NHWC``/``NDHWC``.
5. **Shape**, only when no rule above decides: each of the two readings (``NCL`` or ``NLC``;
   ``NCHW`` or ``NHWC``) *fits* when its positions are the input image's grid at some stride
   ``s`` (each side ``floor`` or ``ceil`` of the image side divided by ``s``; for tokens, their
   number less the prefix tokens equals that grid's area). Exactly one reading fits: it is taken.
   Both or neither fit, or the model's input is not an ``(N, C, H, W)`` image, or the output is
   5-D: a :class:`LayerSelectionError` names the layer and the fix,
   ``--layouts-a/-b 'LAYER=LAYOUT'`` with the candidate layouts (:func:`parse_layouts` reads that
   form). A shape is never read both ways silently.

The decision and the rule that made it are kept in a :class:`LayerLayout` (``source``), exposed as
``FeatureRecorder.layouts`` for provenance.
"""

from __future__ import annotations

import fnmatch
import functools
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

import timm.layers
import timm.models
from torch import nn

from ..errors import ConfigError, LayerSelectionError, ShapeError
from .selection import ACTIVATION_TYPES, GATE_TYPES

__all__ = [
    "LAYOUTS",
    "TOKEN_LAYOUT",
    "LayerLayout",
    "ancestors_of",
    "class_token_counts",
    "num_prefix_tokens",
    "parse_layouts",
    "resolve_layout",
]

LAYOUTS: dict[str, tuple[int, tuple[int, ...]]] = {
    "NC": (1, ()),
    "NCL": (1, (2,)),
    "NLC": (2, (1,)),
    "NCHW": (1, (2, 3)),
    "NHWC": (3, (1, 2)),
    "NCDHW": (1, (2, 3, 4)),
    "NDHWC": (4, (1, 2, 3)),
}
"""Layout name -> (channel axis, position axes)."""

TOKEN_LAYOUT = "NLC"

_BY_SIDE = {
    "first": {3: "NCL", 4: "NCHW", 5: "NCDHW"},
    "last": {3: "NLC", 4: "NHWC", 5: "NDHWC"},
}

Ancestors = Sequence[tuple[str, nn.Module]]


@dataclass(frozen=True)
class LayerLayout:
    """The layout of one recorded layer and why it was chosen.

    Attributes:
        layout: a key of :data:`LAYOUTS`.
        prefix_tokens: leading tokens that are not patches (``NLC`` only; 0 otherwise).
        source: the rule that decided, e.g. ``"structure: follows Linear 'blocks.0.mlp.fc1'"``.
    """

    layout: str
    prefix_tokens: int = 0
    source: str = ""

    def __post_init__(self) -> None:
        check_layout_name(self.layout)
        if self.layout != TOKEN_LAYOUT and self.prefix_tokens:
            raise ShapeError(f"layout {self.layout} has no tokens, so no prefix tokens; use {TOKEN_LAYOUT}")

    @property
    def channel_dim(self) -> int:
        return LAYOUTS[self.layout][0]

    @property
    def spatial_dims(self) -> tuple[int, ...]:
        return LAYOUTS[self.layout][1]

    @property
    def ndim(self) -> int:
        return len(self.spatial_dims) + 2


def check_layout_name(layout: str) -> None:
    """Raise :class:`LayerSelectionError` unless ``layout`` is a key of :data:`LAYOUTS`."""
    if layout not in LAYOUTS:
        raise LayerSelectionError(f"unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}")


def ancestors_of(model: nn.Module, name: str) -> list[tuple[str, nn.Module]]:
    """``(qualified name, module)`` of every ancestor of module ``name``, from the model to the parent.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Sequential(nn.Linear(2, 2), nn.ReLU()))
        >>> [(n, type(m).__name__) for n, m in ancestors_of(net, "0.1")]
        [('', 'Sequential'), ('0', 'Sequential')]
    """
    parts = name.split(".")
    chain = [("", model)]
    for i in range(1, len(parts)):
        chain.append((".".join(parts[:i]), model.get_submodule(".".join(parts[:i]))))
    return chain


def num_prefix_tokens(ancestors: Ancestors) -> int:
    """``num_prefix_tokens`` of the nearest ancestor that defines it as an int (timm ViTs), else 0."""
    for _, module in reversed(ancestors):
        count = getattr(module, "num_prefix_tokens", None)
        if isinstance(count, int) and not isinstance(count, bool):
            return count
    return 0


def resolve_layout(
    name: str,
    module: nn.Module,
    shape: Sequence[int],
    ancestors: Ancestors,
    overrides: Mapping[str, str] | None = None,
    image_size: tuple[int, int] | None = None,
    class_tokens: Sequence[int] | None = None,
    tokens: str = "patch",
    grids: Collection[int] = (),
) -> LayerLayout:
    """Decide the layout of ``module``'s output by the rules of this module's docstring.

    Args:
        name: qualified module name (``"blocks.0.mlp.act"``).
        module: the module.
        shape: shape of its output, batch first.
        ancestors: :func:`ancestors_of` the module, model first.
        overrides: ``{glob: layout}`` given by the user.
        image_size: ``(H, W)`` of the model's input image, for rule 5 and the prefix tokens; ``None`` when unknown.
        class_tokens: the model's possible prefix-token counts (:func:`class_token_counts`); ``None``:
            computed from ``ancestors[0]``, the model.
        tokens: ``"patch"``, ``"all"`` or ``"cls"``; with ``"all"`` a token layer whose prefix cannot be
            decided pools every token instead of raising.
        grids: the areas ``h * w`` of the channels-first maps (convolution and pooling outputs) that
            ran before this layer in the same forward: the model's patch grids, read first when
            deciding a token layer's prefix tokens.

    Returns:
        The layout, its prefix-token count and the deciding rule.

    Raises:
        LayerSelectionError: no rule decides, an override's rank differs from the output's, or the
            prefix tokens of a token layer cannot be decided (and ``tokens`` is not ``"all"``).
        ShapeError: the output has fewer than 2 or more than 5 dimensions.

    Example:
        >>> from torch import nn
        >>> mlp = nn.Sequential(nn.Linear(8, 16), nn.GELU())
        >>> resolve_layout("1", mlp[1], (2, 5, 16), ancestors_of(mlp, "1"))
        LayerLayout(layout='NLC', prefix_tokens=0, source="structure: follows Linear '0'")
    """
    ndim = len(shape)
    if class_tokens is None:
        class_tokens = class_token_counts(ancestors[0][1])
    prefix_for = functools.partial(_prefix_for, name, shape, ancestors, class_tokens, image_size, tokens, grids)
    for pattern, layout in (overrides or {}).items():
        if fnmatch.fnmatchcase(name, pattern):
            check_layout_name(layout)
            if len(LAYOUTS[layout][1]) + 2 != ndim:
                raise LayerSelectionError(
                    f"layer {name}: the layout override {pattern}={layout} is {len(LAYOUTS[layout][1]) + 2}-D but the "
                    f"output {tuple(shape)} is {ndim}-D; use {_override_hint(name, _layouts_of_rank(ndim))}"
                )
            return _with_prefix(LayerLayout(layout, 0, f"override {pattern}={layout}"), prefix_for)
    if ndim == 2:
        return LayerLayout("NC", 0, "rank: 2-D output")
    if ndim not in (3, 4, 5):
        raise ShapeError(
            f"layer {name}: output of shape {tuple(shape)} is {ndim}-D; only 2-D to 5-D outputs "
            "(batch first) can be pooled; select another layer with --layers"
        )
    decided = _family_rule(name, ancestors, ndim)
    if decided is not None:
        return decided
    side_source = _structural_rule(name, module, shape, ancestors)
    if side_source is not None:
        side, source = side_source
        return _with_prefix(LayerLayout(_BY_SIDE[side][ndim], 0, source), prefix_for)
    return _with_prefix(_shape_rule(name, shape, class_tokens, image_size), prefix_for)


def _layouts_of_rank(ndim: int) -> list[str]:
    return [k for k, v in LAYOUTS.items() if len(v[1]) + 2 == ndim]


def _override_hint(name: str, candidates: Sequence[str]) -> str:
    """The CLI fix for a layer whose layout is not decided: ``--layouts-a/-b 'NAME=LAYOUT'`` (identify: ``--layouts``)."""
    return f"--layouts-a/-b '{name}={candidates[0]}' (identify: --layouts; layouts: {', '.join(candidates)})"


def _with_prefix(decided: LayerLayout, prefix_for) -> LayerLayout:
    if decided.layout != TOKEN_LAYOUT:
        return decided
    prefix, why = prefix_for()
    return LayerLayout(decided.layout, prefix, f"{decided.source}; {why}" if why else decided.source)


# --------------------------------------------------------------------------- prefix tokens

_TOKEN_PARAMETER = re.compile(r"(cls|class|dist|reg|register)_?tokens?(_?\d+)?")


def class_token_counts(model: nn.Module) -> tuple[int, ...]:
    """The numbers of prefix tokens (class, distillation, register tokens) ``model`` can put ahead of its patches.

    Read from the model's structure: every ``num_prefix_tokens > 0`` attribute (timm's ViTs), and
    every parameter named like a class token (``cls_token``, ``cls_token_0``, ``cls_token1``,
    ``dist_token``, ``reg_token``): its token count (``shape[-2]`` of a ``(1, k, C)`` parameter),
    and per module the sum over the unnumbered kinds (``cls_token`` + ``dist_token``). CrossViT,
    PiT and CoaT have class tokens but no ``num_prefix_tokens``; ConViT, CaiT and XCiT have it but
    prepend the class token only in later blocks. Empty for a model without any.

    Example:
        >>> import timm
        >>> class_token_counts(timm.create_model("test_vit")), class_token_counts(timm.create_model("test_resnet"))
        ((1,), ())
    """
    counts: set[int] = set()
    for module in model.modules():
        declared = getattr(module, "num_prefix_tokens", None)
        if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
            counts.add(declared)
        unnumbered = []
        for pname, param in module.named_parameters(recurse=False):
            match = _TOKEN_PARAMETER.fullmatch(pname)
            if match is None or param.ndim < 2:
                continue
            count = int(param.shape[-2]) if param.ndim == 3 else 1
            counts.add(count)
            if match.group(2) is None:
                unnumbered.append(count)
        if len(unnumbered) > 1:
            counts.add(sum(unnumbered))
    return tuple(sorted(counts))


def _prefix_for(
    name: str,
    shape: Sequence[int],
    ancestors: Ancestors,
    class_tokens: Sequence[int],
    image_size: tuple[int, int] | None,
    tokens: str,
    grids: Collection[int],
) -> tuple[int, str]:
    """Prefix tokens of a token layer, from the token count it sees: ``(count, why)``.

    The layer's ``T`` tokens are read as ``p`` prefix tokens followed by a patch grid, for each
    ``p`` in ``0`` and the model's :func:`class_token_counts`. ``T - p`` must be ``0`` (a layer that
    sees only the class tokens, like CaiT's class-attention MLP), or the area of a patch grid: first
    one of ``grids``, the maps the model made before this layer (its patch embedding's output,
    PiT's pooled grids); only when no reading fits those, the image's grid at some stride
    (:func:`_grid_fits`). A single token is never read as a 1x1 patch grid in a model with class
    tokens. One reading fits: taken. Several: the nearest ``num_prefix_tokens`` among them. None,
    or several without that tie-break: :class:`LayerSelectionError` (the fix is ``--tokens all``).
    """
    if not class_tokens:
        return 0, ""
    nearest = num_prefix_tokens(ancestors)
    count = int(shape[1])
    if image_size is None:
        return (
            nearest if nearest <= count else 0
        ), f"{nearest} prefix tokens from num_prefix_tokens (input size unknown)"
    fitting = [p for p in (0, *class_tokens) if p == count or count - p in grids and count - p > 1]
    if not fitting:
        fitting = [p for p in (0, *class_tokens) if _prefix_fits(count, p, image_size)]
    if len(fitting) > 1 and nearest in fitting:
        fitting = [nearest]
    if len(fitting) == 1:
        prefix = fitting[0]
        if prefix == count:
            return prefix, f"{count} tokens, all class tokens"
        return prefix, f"{count} tokens = {prefix} prefix + {count - prefix} patches"
    if tokens == "all":
        return 0, f"{count} tokens, all pooled"
    if fitting:
        problem = f"read as the patch grid of the {image_size[0]}x{image_size[1]} input after " + (
            " or ".join(map(str, fitting)) + " prefix tokens alike"
        )
    else:
        problem = (
            f"are not the patch grid of the {image_size[0]}x{image_size[1]} input after "
            + " or ".join(map(str, (0, *class_tokens)))
            + " prefix tokens"
        )
    raise LayerSelectionError(
        f"layer {name}: its {count} tokens {problem}, so its class tokens are unknown; "
        "pool every token with --tokens all, or use another input size"
    )


def _prefix_fits(count: int, prefix: int, image_size: tuple[int, int]) -> bool:
    patches = count - prefix
    if patches == 0:
        return prefix > 0
    return patches > 1 and _grid_fits([patches], image_size)


def parse_layouts(
    values: str | Iterable[str] | Mapping[str, str] | None, option: str = "--layouts-a/-b"
) -> dict[str, str]:
    """Layout overrides ``{glob: layout}`` from ``PATTERN=LAYOUT`` strings (the CLI and config form).

    Each string is a glob pattern on qualified module names (:func:`fnmatch.fnmatchcase`, as in
    ``--layers``), ``=``, and one of :data:`LAYOUTS`. Order is kept: the first matching pattern
    wins (see :func:`resolve_layout`). A mapping is checked and returned as a dict.

    Args:
        values: one string, a sequence of them, a ``{pattern: layout}`` mapping, or ``None`` (no overrides).
        option: the CLI option or config key the values came from, named in error messages.

    Returns:
        ``{pattern: layout}`` in the order given.

    Raises:
        ConfigError: a string is not ``PATTERN=LAYOUT``, or one pattern is given two layouts.
        LayerSelectionError: an unknown layout name.

    Example:
        >>> parse_layouts(["blocks.*.mlp.act=NLC", "stem.*=NCHW"])
        {'blocks.*.mlp.act': 'NLC', 'stem.*': 'NCHW'}
    """
    if values is None:
        return {}
    if isinstance(values, Mapping):
        items = [(str(k), v) for k, v in values.items()]
    else:
        items = []
        for value in [values] if isinstance(values, str) else list(values):
            pattern, sep, layout = value.partition("=") if isinstance(value, str) else ("", "", "")
            if not sep or not pattern.strip() or not layout.strip():
                raise ConfigError(
                    f"{option} {value!r} is not PATTERN=LAYOUT; write e.g. {option} 'blocks.*.mlp.act=NLC' "
                    f"(layouts: {', '.join(LAYOUTS)})"
                )
            items.append((pattern.strip(), layout.strip()))
    parsed: dict[str, str] = {}
    for pattern, layout in items:
        if not isinstance(layout, str) or layout not in LAYOUTS:
            raise LayerSelectionError(
                f"{option} {pattern}={layout}: unknown layout {layout!r}; choose one of {', '.join(LAYOUTS)}"
            )
        if parsed.get(pattern, layout) != layout:
            raise ConfigError(f"{option} gives {pattern} two layouts, {parsed[pattern]} and {layout}; give it one")
        parsed[pattern] = layout
    return parsed


# --------------------------------------------------------------------------- rule 3: families


def _family_rule(name: str, ancestors: Ancestors, ndim: int) -> LayerLayout | None:
    from timm.layers import AttentionPoolLatent
    from timm.models.mlp_mixer import MixerBlock

    for anc_name, anc in ancestors:
        child = (name[len(anc_name) + 1 :] if anc_name else name).split(".")[0]
        if isinstance(anc, MixerBlock) and child == "mlp_tokens" and ndim == 3:
            return LayerLayout(
                "NCL", 0, f"family: token-mixing MLP of MixerBlock {anc_name!r}, pooled over the token-mixing width"
            )
        if isinstance(anc, AttentionPoolLatent) and ndim == 3:
            return LayerLayout(
                TOKEN_LAYOUT, 0, f"family: latent tokens of AttentionPoolLatent {anc_name!r}, no prefix tokens"
            )
    return None


# --------------------------------------------------------------------------- rule 4: structure


def _timm_classes(*names: str, module=timm.layers) -> tuple[type, ...]:
    return tuple(cls for cls in (getattr(module, n, None) for n in names) if isinstance(cls, type))


# LeViT's projection + BatchNorm pairs: LinearNorm normalises the flattened tokens (channels last),
# ConvNorm is a convolution with its BatchNorm2d (channels first).
_LEVIT_LAST = _timm_classes("LinearNorm", module=timm.models.levit)
_LEVIT_FIRST = _timm_classes("ConvNorm", module=timm.models.levit)


_CHANNELS_FIRST = (
    _timm_classes(
        "LayerNorm2d",
        "LayerNorm2dFp32",
        "LayerNormExp2d",
        "RmsNorm2d",
        "RmsNorm2dFp32",
        "SimpleNorm2d",
        "SimpleNorm2dFp32",
        "LayerNormAct2d",
        "LayerNormAct2dFp32",
        "RmsNormAct2d",
        "RmsNormAct2dFp32",
        "FrozenBatchNorm2d",
        "FrozenBatchNormAct2d",
        "ConvNormAct",
        "MixedConv2d",
        "CondConv2d",
    )
    + _LEVIT_FIRST
    + (
        nn.modules.conv._ConvNd,
        nn.modules.batchnorm._NormBase,
        nn.GroupNorm,
        nn.LocalResponseNorm,
        nn.modules.pooling._MaxPoolNd,
        nn.modules.pooling._AvgPoolNd,
        nn.modules.pooling._AdaptiveAvgPoolNd,
        nn.modules.pooling._AdaptiveMaxPoolNd,
        nn.modules.pooling._LPPoolNd,
    )
)
# Checked after the channels-first classes: timm's LayerNorm2d subclasses nn.LayerNorm.
_CHANNELS_LAST = (
    (nn.Linear, nn.LayerNorm, nn.RMSNorm)
    + _timm_classes(
        "RmsNorm",
        "RmsNormFp32",
        "SimpleNorm",
        "SimpleNormFp32",
        "RmsNormAct",
        "RmsNormActFp32",
    )
    + _LEVIT_LAST
)
_PASS_THROUGH = (
    (nn.Identity, nn.modules.dropout._DropoutNd)
    + _timm_classes(
        "DropPath",
        "DropBlock2d",
        "LayerScale",
        "LayerScale2d",
    )
    + ACTIVATION_TYPES
    + GATE_TYPES
)


def _producer_side(module: nn.Module) -> str | None:
    if isinstance(module, _CHANNELS_FIRST):
        return "first"
    if isinstance(module, _CHANNELS_LAST):
        return "last"
    return None


def _channel_counts(module: nn.Module, include_inputs: bool) -> set[int] | None:
    """Channel counts a producer outputs (and takes, with ``include_inputs``); ``None`` if it has none."""
    conv = getattr(module, "conv", None)
    if isinstance(conv, nn.Module) and _producer_side(conv) == "first":  # timm ConvNormAct
        module = conv
    attrs = ["out_channels", "out_features", "num_features", "num_channels"]
    if include_inputs:
        attrs += ["in_channels", "in_features"]
    counts = {getattr(module, a) for a in attrs if isinstance(getattr(module, a, None), int)}
    normalized_shape = getattr(module, "normalized_shape", None)
    if isinstance(normalized_shape, (tuple, list)) and normalized_shape:
        counts.add(int(normalized_shape[-1]))
    elif isinstance(normalized_shape, int):
        counts.add(normalized_shape)
    return counts or None


def _input_counts(module: nn.Module) -> set[int]:
    """Channel counts a producer takes: ``in_channels``, ``in_features`` (of its first convolution or
    linear layer, for a composite such as LeViT's ``LinearNorm``), or a norm's own count."""
    inner = next((m for m in module.modules() if isinstance(m, (nn.modules.conv._ConvNd, nn.Linear))), None)
    if inner is not None:
        module = inner
    counts = {getattr(module, a) for a in ("in_channels", "in_features") if isinstance(getattr(module, a, None), int)}
    if not counts and not isinstance(module, (nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd)):
        counts = _channel_counts(module, include_inputs=False) or set()  # norms keep their channel count
    return counts


def _agrees(producer: nn.Module, side: str, shape: Sequence[int], include_inputs: bool = False) -> bool:
    counts = _channel_counts(producer, include_inputs)
    channels = shape[1] if side == "first" else shape[-1]
    return counts is None or channels in counts


def _structural_rule(
    name: str, module: nn.Module, shape: Sequence[int], ancestors: Ancestors
) -> tuple[str, str] | None:
    own_side = _producer_side(module)
    if own_side is not None and _agrees(module, own_side, shape):
        return own_side, f"structure: the module is a {type(module).__name__}"
    parent_name, parent = ancestors[-1]
    parent_side = _producer_side(parent)
    if parent_side is not None and _agrees(parent, parent_side, shape):
        return parent_side, f"structure: inside {type(parent).__name__} {parent_name!r}"
    siblings = list(parent.named_children())
    position = next((i for i, (_, child) in enumerate(siblings) if child is module), len(siblings))
    runs_first = True  # nothing but shape-preserving modules before it in the parent
    for sibling_name, sibling in reversed(siblings[:position]):
        if isinstance(sibling, _PASS_THROUGH):
            continue
        runs_first = False
        side, where = _producer_side(sibling), ""
        if side is None:  # a composite block (timm's ConvNorm, ConvBN): its last producer made the output
            last = [m for m in sibling.modules() if _producer_side(m) is not None]
            sibling, side, where = (last[-1], _producer_side(last[-1]), "in ") if last else (sibling, None, "")
        reshaped = isinstance(sibling, nn.modules.conv._ConvNd) and len(shape) != len(sibling.kernel_size) + 2
        if reshaped:  # a map flattened between the convolution and the module: the counts alone must tell
            sides = [side for side in ("first", "last") if _agrees(sibling, side, shape)]
            if len(sides) == 1:
                return sides[0], (
                    f"structure: follows {type(sibling).__name__} {_join(parent_name, sibling_name)!r}, "
                    f"its map flattened to {'tokens' if sides[0] == 'last' else 'positions'}"
                )
            runs_first = len(sides) == 2  # as many positions as channels: the next layer tells
        elif side is not None and _agrees(sibling, side, shape):
            return side, f"structure: follows {type(sibling).__name__} {where}{_join(parent_name, sibling_name)!r}"
        break
    for sibling_name, sibling in siblings[position + 1 :] if runs_first else ():
        if isinstance(sibling, _PASS_THROUGH):
            continue
        consumer = next((m for m in sibling.modules() if _producer_side(m) is not None), None)
        if consumer is not None:
            side = _producer_side(consumer)
            if (shape[1] if side == "first" else shape[-1]) in _input_counts(consumer):
                return side, f"structure: feeds {type(consumer).__name__} in {_join(parent_name, sibling_name)!r}"
        break
    producers = [
        (n, s, _producer_side(s))
        for n, s in parent.named_modules(prefix=parent_name)
        if s is not module and s is not parent and _producer_side(s)
    ]
    sides = {side for _, _, side in producers}
    if len(sides) == 1:
        side = sides.pop()
        for producer_name, producer, _ in producers:
            if _agrees(producer, side, shape, include_inputs=True):
                kinds = sorted({type(s).__name__ for _, s, _ in producers})
                return side, (
                    f"structure: all layers in {parent_name or 'the model'!r} are channels-{side} "
                    f"({', '.join(kinds[:4])}{', ...' if len(kinds) > 4 else ''}); "
                    f"{producer_name!r} has the channel count"
                )
    return None


def _join(parent: str, child: str) -> str:
    return f"{parent}.{child}" if parent else child


# --------------------------------------------------------------------------- rule 5: shape


def _grid_fits(sides: Sequence[int], image_size: tuple[int, int]) -> bool:
    """Whether ``sides`` is the image grid at one stride (each side floor or ceil of image / stride)."""
    height, width = image_size
    for stride in range(1, max(height, width) + 1):
        rows = {height // stride, -(-height // stride)}
        cols = {width // stride, -(-width // stride)}
        if len(sides) == 2 and sides[0] in rows and sides[1] in cols:
            return True
        if len(sides) == 1 and any(sides[0] == r * c for r in rows for c in cols):
            return True
    return False


def _shape_rule(
    name: str, shape: Sequence[int], class_tokens: Sequence[int], image_size: tuple[int, int] | None
) -> LayerLayout:
    ndim = len(shape)
    first, last = _BY_SIDE["first"][ndim], _BY_SIDE["last"][ndim]
    fix = _override_hint(name, [first, last])
    if image_size is None or ndim == 5:
        why = (
            "the model's input is not an (N, C, H, W) image"
            if ndim != 5
            else "5-D outputs are never read from their shape"
        )
        raise LayerSelectionError(
            f"layer {name}: no structural rule tells the layout of its output {tuple(shape)} and {why}; use {fix}"
        )
    if ndim == 3:
        prefixes = (0, *class_tokens)
        readings = {
            first: _grid_fits([shape[2]], image_size),
            last: any(_prefix_fits(shape[1], p, image_size) for p in prefixes),
        }
    else:
        readings = {first: _grid_fits(shape[2:4], image_size), last: _grid_fits(shape[1:3], image_size)}
    fitting = [layout for layout, fits in readings.items() if fits]
    if len(fitting) != 1:
        verdict = "both" if fitting else "neither"
        raise LayerSelectionError(
            f"layer {name}: no structural rule tells the layout of its output {tuple(shape)} and {verdict} of "
            f"{first} and {last} fit the {image_size[0]}x{image_size[1]} input; use {fix}"
        )
    layout = fitting[0]
    return LayerLayout(layout, 0, f"shape: only {layout} fits the {image_size[0]}x{image_size[1]} input grid")
