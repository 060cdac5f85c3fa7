"""Pure CKA math on torch tensors: kernels, centring, HSIC estimators, CKA and its streaming form,
permutation tests and bootstrap intervals.

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
from .resampling import bootstrap_ci, permutation_test
from .streaming import MinibatchCKA

__all__ = [
    "KERNELS",
    "LabeledMatrix",
    "MinibatchCKA",
    "ZeroVarianceWarning",
    "bootstrap_ci",
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
    "permutation_test",
    "rbf_cka",
]
