"""Property tests: invariances of CKA, symmetry, self-similarity."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cka_probe import cka_matrix, linear_cka, rbf_cka

settings.register_profile("cka", max_examples=40, deadline=None)
settings.load_profile("cka")

dims = st.tuples(st.integers(6, 30), st.integers(1, 12), st.integers(1, 12))
seeds = st.integers(0, 2**31 - 1)


def _draw(seed: int, n: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g, dtype=torch.float64) * 2.0 + 1.0


def _orthogonal(seed: int, d: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(d, d, generator=g, dtype=torch.float64))
    return q


@given(dims, seeds, st.floats(0.01, 100.0), st.booleans())
def test_linear_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(shape, seed, scale, unbiased):
    n, p, q = shape
    x, y = _draw(seed, n, p), _draw(seed + 1, n, q)
    transformed = scale * x @ _orthogonal(seed + 2, p) + 5.0  # plus a translation
    assert float(linear_cka(transformed, y, unbiased=unbiased)) == pytest.approx(
        float(linear_cka(x, y, unbiased=unbiased)), rel=1e-8, abs=1e-12
    )


@given(dims, seeds, st.floats(0.01, 100.0))
def test_rbf_cka_invariant_to_orthogonal_maps_and_isotropic_scaling(shape, seed, scale):
    n, p, q = shape
    x, y = _draw(seed, n, p), _draw(seed + 1, n, q)
    transformed = scale * x @ _orthogonal(seed + 2, p)
    assert float(rbf_cka(transformed, y)) == pytest.approx(float(rbf_cka(x, y)), rel=1e-8, abs=1e-12)


@given(st.integers(12, 30), seeds)
def test_linear_cka_not_invariant_to_general_invertible_maps(n, seed):
    p = 4
    x, y = _draw(seed, n, p), _draw(seed + 1, n, 3)
    y = y + x[:, :1] * 2.0  # y depends on the first direction of x
    stretch = torch.diag(torch.tensor([1.0, 30.0, 30.0, 30.0], dtype=torch.float64))  # invertible, not orthogonal
    assert abs(float(linear_cka(x @ stretch, y)) - float(linear_cka(x, y))) > 1e-3


@given(dims, seeds, st.booleans(), st.sampled_from(["linear", "rbf"]))
def test_symmetry(shape, seed, unbiased, kernel):
    n, p, q = shape
    x, y = _draw(seed, n, p), _draw(seed + 1, n, q)
    fn = linear_cka if kernel == "linear" else rbf_cka
    assert float(fn(x, y, unbiased=unbiased)) == pytest.approx(float(fn(y, x, unbiased=unbiased)), rel=1e-10, abs=1e-14)
    ab = cka_matrix([x, y], [y], kernel=kernel, unbiased=unbiased)
    ba = cka_matrix([y], [x, y], kernel=kernel, unbiased=unbiased)
    torch.testing.assert_close(ab, ba.T, rtol=1e-10, atol=1e-14)


@given(dims, seeds, st.sampled_from(["linear", "rbf"]))
def test_self_similarity_is_one_for_the_biased_estimator(shape, seed, kernel):
    n, p, _ = shape
    x = _draw(seed, n, p)
    fn = linear_cka if kernel == "linear" else rbf_cka
    assert float(fn(x, x)) == pytest.approx(1.0, abs=1e-12)
    assert float(cka_matrix([x], kernel=kernel)[0, 0]) == pytest.approx(1.0, abs=1e-12)


@given(dims, seeds)
def test_biased_linear_cka_lies_in_unit_interval(shape, seed):
    n, p, q = shape
    value = float(linear_cka(_draw(seed, n, p), _draw(seed + 1, n, q)))
    assert -1e-12 <= value <= 1.0 + 1e-12
