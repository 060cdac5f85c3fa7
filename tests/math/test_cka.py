"""CKA estimators against the float64 NumPy reference, plus their documented edge cases."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from cka_probe import (
    LabeledMatrix,
    ZeroVarianceWarning,
    cka_matrix,
    hsic_biased,
    hsic_unbiased,
    linear_cka,
    rbf_cka,
)
from cka_probe.errors import KernelError, NonFiniteFeatureError, ShapeError
from cka_probe.math import Gram, estimators, gram_linear, gram_rbf

from . import reference

RTOL = 1e-9


def _features(seed: int, n: int, d: int, *, low_rank: int | None = None) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=g, dtype=torch.float64)
    if low_rank is not None:
        x = x[:, :low_rank] @ torch.randn(low_rank, d, generator=g, dtype=torch.float64)
    return x + torch.randn(1, d, generator=g, dtype=torch.float64) * 3.0  # non-zero means


@pytest.fixture
def pair():
    x = _features(0, 40, 12)
    y = torch.tanh(x @ _features(1, 12, 30)) + 0.3 * _features(2, 40, 30)
    return x, y


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("shape", [(40, 12, 30), (20, 64, 5), (8, 3, 100)])
def test_linear_cka_matches_reference(unbiased, shape):
    n, p, q = shape
    x, y = _features(3, n, p), _features(4, n, q)
    y = y + 0.5 * x[:, :1]  # some shared signal
    expected = reference.linear_cka(x.numpy(), y.numpy(), unbiased)
    assert float(linear_cka(x, y, unbiased=unbiased)) == pytest.approx(expected, rel=RTOL)


@pytest.mark.parametrize("unbiased", [False, True])
@pytest.mark.parametrize("sigma_frac", [0.4, 1.0, 2.5])
def test_rbf_cka_matches_reference(pair, unbiased, sigma_frac):
    x, y = pair
    expected = reference.rbf_cka(x.numpy(), y.numpy(), sigma_frac, unbiased)
    assert float(rbf_cka(x, y, sigma_frac=sigma_frac, unbiased=unbiased)) == pytest.approx(expected, rel=RTOL)


def test_rbf_median_is_numpys_even_count_median():
    # n = 4 gives 16 squared distances (an even count): NumPy averages the two middle values.
    x = torch.tensor([[0.0], [1.0], [3.0], [7.0]], dtype=torch.float64)
    np.testing.assert_allclose(gram_rbf(x).numpy(), reference.gram_rbf(x.numpy()), rtol=RTOL)


def test_hsic_estimators_match_reference(pair):
    x, y = pair
    k, l = gram_linear(x), gram_linear(y)
    assert float(hsic_biased(k, l)) == pytest.approx(reference.hsic_biased(k.numpy(), l.numpy()), rel=RTOL)
    # U-centring inner product vs Song et al.'s closed form: two different derivations agree.
    assert float(hsic_unbiased(k, l)) == pytest.approx(reference.hsic_unbiased(k.numpy(), l.numpy()), rel=RTOL)


def test_unbiased_hsic_is_unbiased_for_independent_data():
    # Mean of the unbiased estimator over many independent draws of independent x, y is ~0,
    # while the biased estimator is strictly positive on every draw.
    g = torch.Generator().manual_seed(5)
    unbiased_vals, biased_vals = [], []
    for _ in range(200):
        x = torch.randn(10, 3, generator=g, dtype=torch.float64)
        y = torch.randn(10, 3, generator=g, dtype=torch.float64)
        unbiased_vals.append(float(hsic_unbiased(gram_linear(x), gram_linear(y))))
        biased_vals.append(float(hsic_biased(gram_linear(x), gram_linear(y))))
    assert abs(np.mean(unbiased_vals)) < 3 * np.std(unbiased_vals) / np.sqrt(200)
    assert min(biased_vals) > 0


def test_feature_space_and_gram_space_agree(pair):
    x, y = pair
    via_features = estimators._linear_cka_features(x, y)
    via_grams = linear_cka(Gram(gram_linear(x)), Gram(gram_linear(y)))
    assert float(via_features) == pytest.approx(float(via_grams), rel=RTOL)


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_matrix_equals_pairwise_loop(kernel, unbiased):
    feats_a = [_features(10 + i, 24, d) for i, d in enumerate([5, 40, 7])]
    feats_b = [torch.relu(_features(20 + i, 24, d)) + feats_a[0][:, :1] for i, d in enumerate([9, 3])]
    matrix = cka_matrix(feats_a, feats_b, kernel=kernel, unbiased=unbiased)
    assert matrix.shape == (3, 2) and matrix.dtype == torch.float64
    single = linear_cka if kernel == "linear" else rbf_cka
    for i, x in enumerate(feats_a):
        for j, y in enumerate(feats_b):
            assert float(matrix[i, j]) == pytest.approx(float(single(x, y, unbiased=unbiased)), rel=RTOL)
            ref = (reference.linear_cka if kernel == "linear" else reference.rbf_cka)(
                x.numpy(), y.numpy(), unbiased=unbiased
            )
            assert float(matrix[i, j]) == pytest.approx(ref, rel=RTOL)


def test_matrix_keeps_names_in_step_with_rows():
    x, y, z = _features(30, 16, 4), _features(31, 16, 6), _features(32, 16, 2)
    feats_a = {"block.2": z, "block.0": x}  # deliberately not sorted
    feats_b = {"head": y, "stem": x}
    matrix = cka_matrix(feats_a, feats_b)
    assert isinstance(matrix, LabeledMatrix)
    assert matrix.rows == ("block.2", "block.0") and matrix.cols == ("head", "stem")
    assert matrix["block.0", "stem"] == pytest.approx(1.0, rel=1e-12)
    assert matrix["block.2", "head"] == pytest.approx(reference.linear_cka(z.numpy(), y.numpy()), rel=RTOL)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("unbiased", [False, True])
def test_self_matrix_is_symmetric_with_unit_diagonal(dtype, unbiased):
    # In float32 too: a layer against itself is 1 to float64 rounding, not to float32's (the norms come from
    # the same products as the off-diagonal entries), whether feats_b is omitted or the same mapping again.
    feats = {f"layer{i}": _features(40 + i, 30, 3 + 5 * i) for i in range(4)}
    feats["wide"] = torch.relu(_features(99, 30, 5000)) + 2.0
    for matrix in (
        cka_matrix(feats, unbiased=unbiased, dtype=dtype),
        cka_matrix(feats, feats, unbiased=unbiased, dtype=dtype),
    ):
        values = matrix.values
        torch.testing.assert_close(values, values.T, rtol=0, atol=1e-14)
        torch.testing.assert_close(values.diagonal(), torch.ones(5, dtype=torch.float64), rtol=0, atol=1e-14)


def test_float32_input_gives_float64_result():
    x = torch.randn(16, 5)
    assert linear_cka(x, x.relu()).dtype == torch.float64
    assert cka_matrix([x], [x.relu()]).dtype == torch.float64


# ----------------------------------------------------------------------------- edge cases


def test_unbiased_needs_four_examples():
    x = torch.randn(3, 5)
    with pytest.raises(ShapeError, match="at least 4"):
        linear_cka(x, x, unbiased=True)
    with pytest.raises(ShapeError, match="at least 4"):
        cka_matrix([x], [x], unbiased=True)
    assert float(linear_cka(x, x)) == pytest.approx(1.0)  # the biased estimator is defined at n = 3


def test_constant_layer_is_nan_with_warning_naming_it():
    x = _features(50, 20, 6)
    feats_a = {"conv": x, "dead_relu": torch.zeros(20, 8)}
    feats_b = {"fc": x[:, :3], "constant": torch.full((20, 2), 7.25)}
    with pytest.warns(ZeroVarianceWarning) as record:
        matrix = cka_matrix(feats_a, feats_b)
    messages = [str(w.message) for w in record]
    assert len(messages) == 1 and "layer(s) dead_relu, constant are constant" in messages[0]  # one warning, both sides
    values = matrix.values
    assert torch.isnan(values[1]).all() and torch.isnan(values[:, 1]).all()
    assert torch.isfinite(values[0, 0])
    with pytest.warns(ZeroVarianceWarning):
        assert torch.isnan(linear_cka(x, torch.zeros(20, 8)))
    with pytest.warns(ZeroVarianceWarning):
        assert torch.isnan(rbf_cka(x, torch.ones(20, 8)))
    with pytest.warns(ZeroVarianceWarning):
        assert torch.isnan(linear_cka(x, torch.ones(20, 8), unbiased=True))


def test_small_but_real_variance_is_not_treated_as_constant():
    x = _features(51, 20, 6)
    y = 1e4 + 1e-3 * x  # float64: large offset, small but genuine variation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert float(linear_cka(x, y)) == pytest.approx(1.0, rel=1e-6)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input_names_the_layer(bad):
    x = _features(52, 10, 3)
    broken = x.clone()
    broken[4, 1] = bad
    with pytest.raises(NonFiniteFeatureError, match="blocks.3.act"):
        cka_matrix({"stem": x}, {"blocks.3.act": broken})
    with pytest.raises(NonFiniteFeatureError, match="layer y"):
        linear_cka(x, broken)


def test_different_n_is_an_error():
    with pytest.raises(ShapeError, match="different numbers of examples"):
        cka_matrix({"a": torch.randn(10, 3)}, {"b": torch.randn(12, 3)})
    with pytest.raises(ShapeError, match="different numbers of examples"):
        linear_cka(torch.randn(10, 3), torch.randn(11, 3))


def test_wrong_rank_and_empty_inputs_are_errors():
    with pytest.raises(ShapeError, match="2-D"):
        cka_matrix([torch.randn(4, 3, 2, 2)], [torch.randn(4, 3)])
    with pytest.raises(ShapeError, match="no layers"):
        cka_matrix([], [torch.randn(4, 3)])
    with pytest.raises(KernelError, match="unknown kernel"):
        cka_matrix([torch.randn(4, 3)], kernel="poly")


def test_results_are_not_clamped():
    # The unbiased estimator goes below 0 for unrelated data: it must be reported as it is.
    g = torch.Generator().manual_seed(7)
    values = [
        float(linear_cka(torch.randn(6, 2, generator=g), torch.randn(6, 2, generator=g), unbiased=True))
        for _ in range(50)
    ]
    assert min(values) < 0
