"""Which modules of a model are recorded: the default activation set, glob patterns, or a predicate.

The default set, ``layers="activations"``, is every module that is an elementwise activation
(:data:`ACTIVATION_TYPES`), taken from the libraries' own lists so that new classes are covered:

* every class of ``torch.nn``'s activation module (ReLU, ReLU6, GELU, SiLU, Hardswish, LeakyReLU,
  ELU, SELU, CELU, Mish, Softplus, PReLU, Tanh, ...; not ``MultiheadAttention``);
* every class in timm's activation-layer registry (``timm.layers.create_act._ACT_LAYERS``, what
  ``create_act_layer`` builds) and every class of ``timm.layers.activations`` and
  ``timm.layers.activations_me`` (timm's ``GELU``, ``GELUTanh``, ``QuickGELU``, ``Swish``, ...);
* the activations timm defines inside model files, which its registry does not list: MetaFormer's
  ``StarReLU`` and ``SquaredReLU`` (CAFormer, ConvFormer, PoolFormerV2) and NFNet's ``GammaAct``.

An activation nested inside another selected activation (the ``nn.ReLU`` inside ``StarReLU``) is
left out: the outer module's output is the activation. timm's ConvNeXt uses timm's ``GELU``, which
is not ``torch.nn.GELU``; timm's ``BatchNormAct2d`` holds its activation as a child module ``.act``
and so contributes it.

Left out of the default set:

* gates (:data:`GATE_TYPES`: Sigmoid, Hardsigmoid, timm's ``Sigmoid``/``HardSigmoid``, Softmax and
  its relatives): their outputs are multiplicative weights (squeeze-excite gates, attention
  probabilities), not features of the image;
* activations inside input-independent position-bias generators (timm's ``RelPosMlp``, the
  ``cpb_mlp`` of Swin V2's and the ``meta_mlp`` of Swin V2 CR's window attention): they see
  relative coordinates, not images;
* the kernel function of EfficientViT's linear attention (``LiteMLA.kernel_func``, a ReLU on the
  per-head queries and keys, ``(N, heads, tokens, head_dim)``): like a softmax, it makes attention
  weights, and its output is not a map of channels.

Both stay selectable by name or glob. ``layers`` may also be a glob pattern or a list of them,
matched with :func:`fnmatch.fnmatchcase` against the qualified names of
:meth:`torch.nn.Module.named_modules` (``"blocks.*.mlp.act"``), or a predicate
``(name, module) -> bool``. A pattern that matches no module is a :class:`LayerSelectionError`
that names the closest module names.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
from collections.abc import Callable, Sequence
from types import ModuleType

from timm.layers import activations as timm_act
from timm.layers import activations_me as timm_act_me
from timm.layers import create_act as timm_create_act
from timm.models import metaformer as timm_metaformer
from timm.models import nfnet as timm_nfnet
from torch import nn
from torch.nn.modules import activation as torch_act

from ..errors import LayerSelectionError

__all__ = ["ACTIVATION_TYPES", "DEFAULT_LAYERS", "GATE_TYPES", "is_activation", "select_layers"]

DEFAULT_LAYERS = "activations"

GATE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Sigmoid,
    nn.Hardsigmoid,
    nn.Softmax,
    nn.Softmin,
    nn.Softmax2d,
    nn.LogSoftmax,
    timm_act.Sigmoid,
    timm_act.HardSigmoid,
    timm_act_me.HardSigmoidMe,
)
"""Activation-like classes whose outputs are gate values; left out of the default set."""


def _classes_defined_in(module: ModuleType) -> list[type[nn.Module]]:
    """The ``nn.Module`` subclasses that ``module`` itself defines (not those it imports)."""
    return [
        cls
        for cls in vars(module).values()
        if isinstance(cls, type) and issubclass(cls, nn.Module) and cls.__module__ == module.__name__
    ]


def _activation_registry() -> tuple[type[nn.Module], ...]:
    """Every activation class of torch.nn and timm, gates and non-elementwise modules left out."""
    found: list[type[nn.Module]] = _classes_defined_in(torch_act)  # torch.nn's activation module
    for registry in timm_create_act._ACT_LAYERS:  # timm's name -> class registry (create_act_layer)
        found += [cls for cls in registry.values() if isinstance(cls, type)]
    found += _classes_defined_in(timm_act) + _classes_defined_in(timm_act_me)
    found += list(_TIMM_MODEL_ACTIVATIONS)
    left_out = (nn.Identity, nn.MultiheadAttention, *GATE_TYPES)  # not elementwise, or gates
    return tuple(cls for cls in dict.fromkeys(found) if not issubclass(cls, left_out))


# Activation classes that timm defines inside a model file rather than in timm.layers, so its
# registry does not list them: MetaFormer's StarReLU (s * relu(x)^2 + b) and SquaredReLU (CAFormer,
# ConvFormer, PoolFormerV2) and NFNet's GammaAct (gamma * act(x)).
_TIMM_MODEL_ACTIVATIONS: tuple[type[nn.Module], ...] = (
    timm_metaformer.StarReLU,
    timm_metaformer.SquaredReLU,
    timm_nfnet.GammaAct,
)

ACTIVATION_TYPES: tuple[type[nn.Module], ...] = _activation_registry()
"""Module classes recorded by ``layers="activations"``; :data:`GATE_TYPES` are not among them."""


def _position_bias_modules(model: nn.Module) -> list[nn.Module]:
    """The input-independent position-bias generators and attention kernels inside ``model``."""
    from timm.layers.pos_embed_rel import RelPosMlp
    from timm.models.efficientvit_mit import LiteMLA
    from timm.models.swin_transformer_v2 import WindowAttention as SwinV2WindowAttention
    from timm.models.swin_transformer_v2_cr import WindowMultiHeadAttention as SwinV2CrWindowAttention

    found = []
    for module in model.modules():
        if isinstance(module, RelPosMlp):
            found.append(module)
        elif isinstance(module, SwinV2WindowAttention):
            found.append(module.cpb_mlp)
        elif isinstance(module, SwinV2CrWindowAttention):
            found.append(module.meta_mlp)
        elif isinstance(module, LiteMLA):
            found.append(module.kernel_func)
    return found


def is_activation(module: nn.Module) -> bool:
    """Whether ``module`` belongs to the default ``"activations"`` set (gates excluded).

    Example:
        >>> from torch import nn
        >>> is_activation(nn.GELU()), is_activation(nn.Sigmoid()), is_activation(nn.Linear(2, 2))
        (True, False, False)
    """
    return isinstance(module, ACTIVATION_TYPES) and not isinstance(module, GATE_TYPES)


LayerSpec = str | Sequence[str] | Callable[[str, nn.Module], bool]


def select_layers(model: nn.Module, layers: LayerSpec = DEFAULT_LAYERS) -> list[str]:
    """Qualified names of the modules to record, in registration order (``named_modules``).

    The model itself (name ``""``) is never selected; a module registered under two names is
    selected once, under the name ``named_modules`` gives it first.

    Args:
        model: the network.
        layers: ``"activations"`` (the default set described in this module's docstring), one glob
            pattern or module name, a sequence of them, or a predicate ``(name, module) -> bool``.

    Returns:
        Module names; empty only when the default set or a predicate finds nothing.

    Raises:
        LayerSelectionError: a pattern matches no module (the message lists close names), or
            ``layers`` is an empty sequence.

    Example:
        >>> from torch import nn
        >>> net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 1), nn.Sigmoid())
        >>> select_layers(net), select_layers(net, ["0", "3"])
        (['1'], ['0', '3'])
    """
    named = [(name, module) for name, module in model.named_modules() if name]
    if callable(layers) and not isinstance(layers, str):
        return [name for name, module in named if layers(name, module)]
    if layers == DEFAULT_LAYERS:
        excluded = _inside_position_bias(model)
        chosen = [name for name, module in named if is_activation(module) and name not in excluded]
        outer = set(chosen)
        return [name for name in chosen if not any(prefix in outer for prefix in _ancestor_names(name))]
    patterns = [layers] if isinstance(layers, str) else list(layers)
    if not patterns:
        raise LayerSelectionError(f'layers is an empty list; pass "{DEFAULT_LAYERS}", module names or glob patterns')
    names = [name for name, _ in named]
    for pattern in patterns:
        if not isinstance(pattern, str):
            raise LayerSelectionError(f"layer pattern {pattern!r} is not a string; pass module names or glob patterns")
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise LayerSelectionError(no_match_message(pattern, names, type(model).__name__))
    return [name for name in names if any(fnmatch.fnmatchcase(name, p) for p in patterns)]


def no_match_message(pattern: str, names: Sequence[str], model_name: str, what: str = "layer pattern") -> str:
    """One line saying that ``pattern`` matches none of ``names``, with the closest names.

    A glob pattern is compared with the names' own globs (every number replaced by ``*``), so that
    ``blocks.*.mlp.gelu`` is told about ``blocks.*.mlp.act``.

    Example:
        >>> no_match_message("blocks.0.mlp.actt", ["blocks.0.mlp.act", "blocks.0.mlp.fc1"], "VisionTransformer")
        "layer pattern 'blocks.0.mlp.actt' matches no module of VisionTransformer; close matches: blocks.0.mlp.act, blocks.0.mlp.fc1 (names come from model.named_modules())"
    """
    candidates = list(names)
    if any(char in pattern for char in "*?["):
        candidates = list(dict.fromkeys(re.sub(r"\d+", "*", name) for name in names))
    close = difflib.get_close_matches(pattern, candidates, n=5, cutoff=0.6)
    hint = f"close matches: {', '.join(close)}" if close else "no close match"
    return f"{what} {pattern!r} matches no module of {model_name}; {hint} (names come from model.named_modules())"


def _ancestor_names(name: str) -> list[str]:
    """Qualified names of the ancestors of module ``name`` below the model (``"a.b.c"`` -> ``a``, ``a.b``)."""
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def _inside_position_bias(model: nn.Module) -> set[str]:
    """Names of modules inside input-independent position-bias generators."""
    inside = {id(sub) for generator in _position_bias_modules(model) for sub in generator.modules()}
    return {name for name, module in model.named_modules() if id(module) in inside}
