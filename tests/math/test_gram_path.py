"""Layers given as (n, n) linear Gram matrices: every estimator against the float64 NumPy reference.

The Grams are formed here from features in NumPy (raw ``X X^T`` and centred ``X_c X_c^T``); the
expected values come from ``reference`` (explicit centring matrices, Song et al.'s closed form,
``K_ii + K_jj - 2 K_ij`` distances), never from the feature path of cka_probe.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cka_probe.errors import NonFiniteFeatureError, ShapeError
from cka_probe.math import (
    Gram,
    MinibatchCKA,
    bootstrap_ci,
    cka_matrix,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    permutation_test,
    rbf_cka,
)
from cka_probe.math.resampling import _permutations, _resample_indices

from . import reference
from .test_resampling import _np_bootstrap_replicate, _related_layers

RTOL = 1e-9


def _gram(x: torch.Tensor, centred: bool) -> Gram:
    a = x.numpy()
    if centred:
        a = a - a.mean(axis=0)
    return Gram(torch.from_numpy(a @ a.T))


def _ref(x: np.ndarray, y: np.ndarray, kernel: str, unbiased: bool, sigma_frac: float = 1.0) -> float:
    if kernel == "linear":
        return reference.linear_cka(x, y, unbiased)
    k = reference.gram_rbf_from_linear(x @ x.T, sigma_frac)
    l = reference.gram_rbf_from_linear(y @ y.T, sigma_frac)
    return reference.cka(k, l, unbiased)


@pytest.mark.parametrize("centred", [False, True])
@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_pair_estimators_on_grams_match_reference(centred, kernel, unbiased):
    (x, w), (y,) = _related_layers(0, 30, [7, 300], [12])  # w is wider than n: flattened-like
    fn = linear_cka if kernel == "linear" else rbf_cka
    for a in (x, w):
        expected = _ref(a.numpy(), y.numpy(), kernel, unbiased, 1.0)
        assert float(fn(_gram(a, centred), _gram(y, centred), unbiased=unbiased)) == pytest.approx(expected, rel=RTOL)
        assert float(fn(_gram(a, centred), y, unbiased=unbiased)) == pytest.approx(expected, rel=RTOL)  # mixed


def test_rbf_distances_from_a_gram_match_the_features_distances():
    # The RBF reference on features (direct differences) and on the Gram agree: the Gram path is the same kernel.
    (x,), (y,) = _related_layers(1, 25, [9], [4])
    expected = reference.rbf_cka(x.numpy(), y.numpy(), 0.6, unbiased=False)
    assert float(rbf_cka(_gram(x, False), _gram(y, True), sigma_frac=0.6)) == pytest.approx(expected, rel=RTOL)


def test_hsic_accepts_grams():
    (x,), (y,) = _related_layers(2, 20, [5], [6])
    k, l = x.numpy() @ x.numpy().T, y.numpy() @ y.numpy().T
    assert float(hsic_unbiased(Gram(torch.from_numpy(k)), Gram(torch.from_numpy(l)))) == pytest.approx(
        reference.hsic_unbiased(k, l), rel=RTOL
    )
    assert float(hsic_biased(Gram(torch.from_numpy(k)), Gram(torch.from_numpy(l)))) == pytest.approx(
        reference.hsic_biased(k, l), rel=RTOL
    )


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_all_pairs_matrix_mixes_grams_and_features(kernel, unbiased, dtype):
    feats_a, feats_b = _related_layers(3, 24, [3, 40, 8], [5, 200])
    layers_a = {"f0": feats_a[0], "g1": _gram(feats_a[1], False), "g2": _gram(feats_a[2], True)}
    layers_b = {"g0": _gram(feats_b[0], True), "f1": feats_b[1]}
    matrix = cka_matrix(layers_a, layers_b, kernel=kernel, unbiased=unbiased, dtype=dtype)
    tolerance = {"rel": RTOL} if dtype == torch.float64 else {"abs": 1e-6}
    for i, x in enumerate(feats_a):
        for j, y in enumerate(feats_b):
            expected = _ref(x.numpy(), y.numpy(), kernel, unbiased)
            assert float(matrix.values[i, j]) == pytest.approx(expected, **tolerance)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_minibatch_accumulator_takes_per_batch_grams(kernel):
    feats_a, feats_b = _related_layers(4, 48, [6, 90], [4])
    batches = [slice(0, 16), slice(16, 30), slice(30, 48)]
    metric = MinibatchCKA(kernel=kernel)
    for s in batches:
        metric.update([_gram(feats_a[0][s], False), _gram(feats_a[1][s], True)], [feats_b[0][s]])
    result = metric.compute()
    ref_kernel = reference.gram_linear if kernel == "linear" else reference.gram_rbf
    for i, x in enumerate(feats_a):
        expected = reference.minibatch_cka(
            [x[s].numpy() for s in batches], [feats_b[0][s].numpy() for s in batches], ref_kernel
        )
        assert float(result[i, 0]) == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_permutation_test_on_grams_equals_a_loop_over_the_same_permutations(kernel, unbiased):
    feats_a, feats_b = _related_layers(5, 14, [3, 20], [4], noise=2.0)
    p = permutation_test(
        [_gram(f, False) for f in feats_a], [_gram(feats_b[0], True)], 60, 11, kernel=kernel, unbiased=unbiased
    )
    perms = _permutations(14, 60, 11).numpy()
    y = feats_b[0].numpy()
    for i, x in enumerate(feats_a):
        observed = _ref(x.numpy(), y, kernel, unbiased)
        permuted = np.array([_ref(x.numpy(), y[perm], kernel, unbiased) for perm in perms])
        assert float(p[i, 0]) == pytest.approx((1 + np.sum(permuted >= observed - 1e-12)) / 61, abs=1e-15)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_bootstrap_on_grams_equals_the_replicates_of_the_features(kernel, unbiased):
    n, num_resamples, level = 12, 40, 0.9
    feats_a, feats_b = _related_layers(6, n, [3], [16], noise=1.0)
    low, high = bootstrap_ci(
        [_gram(feats_a[0], True)], [_gram(feats_b[0], False)], num_resamples, 2, level, kernel, unbiased
    )
    replicates = [
        _np_bootstrap_replicate(feats_a[0].numpy(), feats_b[0].numpy(), idx, kernel, unbiased)
        for idx in _resample_indices(n, num_resamples, 2).numpy()
    ]
    expected = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
    assert float(low[0, 0]) == pytest.approx(expected[0], rel=RTOL)
    assert float(high[0, 0]) == pytest.approx(expected[1], rel=RTOL)


def test_constant_layer_given_as_gram_is_nan_with_warning():
    from cka_probe import ZeroVarianceWarning

    (x,), _ = _related_layers(7, 20, [4], [1])
    constant = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64).repeat(20, 1)
    for centred in (False, True):
        with pytest.warns(ZeroVarianceWarning, match="layer\\(s\\) dead"):
            matrix = cka_matrix({"dead": _gram(constant, centred)}, {"live": x})
        assert torch.isnan(matrix.values).all()


def test_gram_errors():
    with pytest.raises(ShapeError, match="square"):
        Gram(torch.zeros(3, 4))
    broken = torch.eye(6, dtype=torch.float64)
    broken[2, 3] = float("nan")
    with pytest.raises(NonFiniteFeatureError, match="layer conv"):
        cka_matrix({"conv": Gram(broken)}, {"fc": torch.randn(6, 2)})
    with pytest.raises(ShapeError, match="different numbers of examples"):
        linear_cka(Gram(torch.eye(5)), torch.randn(6, 2))
