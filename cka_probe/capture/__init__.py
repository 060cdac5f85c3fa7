"""Activation capture: hooks that record layers' outputs, pooled to ``(n, C)`` features.

Public API::

    from cka_probe.capture import FeatureRecorder, describe_layers

* :class:`FeatureRecorder` records while the model runs (:mod:`.recorder`);
* :func:`select_layers` says which modules are hooked (:mod:`.selection`);
* :func:`resolve_layout` decides each output's layout (:mod:`.layouts`), :func:`parse_layouts`
  reads ``PATTERN=LAYOUT`` overrides and :func:`class_token_counts` a model's class tokens;
* :func:`pool_activation` pools one output (:mod:`.pooling`).
"""

from .layouts import LAYOUTS, LayerLayout, class_token_counts, parse_layouts, resolve_layout
from .pooling import pool_activation
from .recorder import FeatureRecorder, LayerInfo, describe_layers
from .selection import ACTIVATION_TYPES, GATE_TYPES, is_activation, select_layers

__all__ = [
    "ACTIVATION_TYPES",
    "GATE_TYPES",
    "LAYOUTS",
    "FeatureRecorder",
    "LayerInfo",
    "LayerLayout",
    "class_token_counts",
    "describe_layers",
    "is_activation",
    "parse_layouts",
    "pool_activation",
    "resolve_layout",
    "select_layers",
]
