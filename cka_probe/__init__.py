"""cka-probe: layer-by-layer Centered Kernel Alignment of vision networks.

Public API (each name is imported when first used, so ``import cka_probe`` and the command line's
``--help`` do not pay for timm, pandas or plotting)::

    from cka_probe import compare, linear_cka, rbf_cka, cka_matrix, MinibatchCKA, FeatureRecorder
"""

from __future__ import annotations

from ._lazy import lazy_exports
from ._version import __version__

_PUBLIC = {
    "CKAProbeError": "errors",
    "CKAResult": "jobs",
    "Side": "jobs",
    "compare": "jobs",
    "FeatureRecorder": "capture",
    "LayerInfo": "capture",
    "describe_layers": "capture",
    "Gram": "math",
    "LabeledMatrix": "math",
    "MinibatchCKA": "math",
    "ZeroVarianceWarning": "math",
    "bootstrap_ci": "math",
    "cka_matrix": "math",
    "hsic_biased": "math",
    "hsic_unbiased": "math",
    "linear_cka": "math",
    "permutation_test": "math",
    "rbf_cka": "math",
}

__all__ = ["__version__", *sorted(_PUBLIC)]

__getattr__, __dir__ = lazy_exports(__name__, globals(), _PUBLIC)
