"""Activation capture: hooks that record layers' outputs, pooled to ``(n, C)`` features.

Public API::

    from cka_probe.capture import FeatureRecorder, describe_layers

* :class:`FeatureRecorder` records while the model runs (:mod:`.recorder`);
* :func:`select_layers` says which modules are hooked (:mod:`.selection`);
* :func:`resolve_layout` decides each output's layout (:mod:`.layouts`);
* :func:`pool_activation` pools one output (:mod:`.pooling`).
"""

from .layouts import LAYOUTS, LayerLayout, resolve_layout
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
    "describe_layers",
    "is_activation",
    "pool_activation",
    "resolve_layout",
    "select_layers",
]
