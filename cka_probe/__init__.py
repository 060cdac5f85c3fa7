"""cka-probe: layer-by-layer Centered Kernel Alignment of vision networks.

Public API::

    from cka_probe import compare, linear_cka, rbf_cka, cka_matrix, MinibatchCKA, FeatureRecorder
"""

__version__ = "0.1.0"

from .analysis import CKAResult, compare
from .capture import FeatureRecorder, LayerInfo, describe_layers
from .errors import CKAProbeError
from .math import (
    LabeledMatrix,
    MinibatchCKA,
    ZeroVarianceWarning,
    cka_matrix,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    rbf_cka,
)
from .models import _swin as _swin  # registers Swin-Nano/Pico with timm

__all__ = [
    "CKAProbeError",
    "CKAResult",
    "compare",
    "FeatureRecorder",
    "LabeledMatrix",
    "LayerInfo",
    "MinibatchCKA",
    "ZeroVarianceWarning",
    "__version__",
    "cka_matrix",
    "describe_layers",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "rbf_cka",
]
