"""Pure CKA math on torch tensors: kernels, centring, HSIC estimators, CKA and its streaming form.

Nothing here knows about models, hooks or files.
"""

from .cka import (
    KERNELS,
    LabeledMatrix,
    ZeroVarianceWarning,
    centered_grams,
    cka_matrix,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    rbf_cka,
)
from .kernels import center_features, center_gram, center_gram_unbiased, gram_linear, gram_rbf
from .streaming import MinibatchCKA

__all__ = [
    "KERNELS",
    "LabeledMatrix",
    "MinibatchCKA",
    "ZeroVarianceWarning",
    "center_features",
    "center_gram",
    "center_gram_unbiased",
    "centered_grams",
    "cka_matrix",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "rbf_cka",
]
