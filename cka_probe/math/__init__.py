"""Pure CKA math on torch tensors: kernels, centring, HSIC estimators, CKA and its streaming form,
permutation tests and bootstrap intervals.

Every estimator takes a layer as ``(n, d)`` features or as its ``(n, n)`` linear Gram matrix
wrapped in :class:`Gram` (for flattened activations that are never held whole).
Nothing here knows about models, hooks or files.
"""

from .._choices import KERNELS, PRECISIONS
from .checks import ZeroVarianceWarning, constant_layers
from .engine import LabeledMatrix, centered_grams, cka_matrix
from .estimators import hsic_biased, hsic_unbiased, linear_cka, rbf_cka
from .kernels import (
    Gram,
    center_features,
    center_gram,
    center_gram_unbiased,
    gram_linear,
    gram_rbf,
    squared_distances,
)
from .resampling import bootstrap_ci, bootstrap_replicates, percentile_interval, permutation_test
from .streaming import MinibatchCKA

__all__ = [
    "KERNELS",
    "PRECISIONS",
    "Gram",
    "LabeledMatrix",
    "MinibatchCKA",
    "ZeroVarianceWarning",
    "bootstrap_ci",
    "bootstrap_replicates",
    "center_features",
    "center_gram",
    "center_gram_unbiased",
    "centered_grams",
    "cka_matrix",
    "constant_layers",
    "gram_linear",
    "gram_rbf",
    "hsic_biased",
    "hsic_unbiased",
    "linear_cka",
    "percentile_interval",
    "permutation_test",
    "rbf_cka",
    "squared_distances",
]
