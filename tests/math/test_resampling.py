"""Permutation test and bootstrap intervals against float64 NumPy loops over the same draws."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from scipy import stats

from cka_probe.errors import CKAProbeError, KernelError, ShapeError
from cka_probe.math import (
    LabeledMatrix,
    ZeroVarianceWarning,
    bootstrap_ci,
    bootstrap_replicates,
    center_gram_unbiased,
    cka_matrix,
    permutation_test,
    resampling,
)
from cka_probe.math.resampling import _permutations, _resample_indices

from . import reference

RTOL = 1e-9


def _randn(g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _related_layers(seed: int, n: int, dims_a, dims_b, noise: float = 1.0):
    """Layers of two models that share a 3-dimensional signal, with non-zero feature means."""
    g = torch.Generator().manual_seed(seed)
    signal = _randn(g, n, 3)

    def layer(d):
        return torch.tanh(signal @ _randn(g, 3, d)) + noise * _randn(g, n, d) + _randn(g, 1, d)

    return [layer(d) for d in dims_a], [layer(d) for d in dims_b]


def _np_cka(x: np.ndarray, y: np.ndarray, kernel: str, unbiased: bool, sigma_frac: float = 1.0) -> float:
    if kernel == "linear":
        return reference.linear_cka(x, y, unbiased)
    return reference.rbf_cka(x, y, sigma_frac, unbiased)


def _np_gram(x: np.ndarray, kernel: str, sigma_frac: float = 1.0) -> np.ndarray:
    return reference.gram_linear(x) if kernel == "linear" else reference.gram_rbf(x, sigma_frac)


def _distinct_tuple_hsic(k: np.ndarray, l: np.ndarray, idx: np.ndarray) -> float:
    """Song et al.'s order-4 U-statistic on the resample, summed over position 4-tuples whose
    examples are distinct (unnormalised): written from the definition, by brute force."""
    distinct = idx[:, None] != idx[None, :]
    valid = np.einsum("ab,ac,ad,bc,bd,cd->abcd", *(distinct.astype(float),) * 6)
    term_ab = np.einsum("abcd,ab,ab->", valid, k, l)
    term_cd = np.einsum("abcd,ab,cd->", valid, k, l)
    term_ac = np.einsum("abcd,ab,ac->", valid, k, l)
    return term_ab + term_cd - 2.0 * term_ac


def _np_bootstrap_replicate(x, y, idx, kernel, unbiased, sigma_frac=1.0) -> float:
    """CKA of one resample: the biased estimator on X[idx], Y[idx]; the unbiased one over distinct examples."""
    k, l = _np_gram(x[idx], kernel, sigma_frac), _np_gram(y[idx], kernel, sigma_frac)
    if not unbiased:
        return reference.cka(k, l, unbiased=False)
    kl, kk, ll = (_distinct_tuple_hsic(p, q, idx) for p, q in ((k, l), (k, k), (l, l)))
    return kl / np.sqrt(kk * ll)


# ----------------------------------------------------------------------------- permutation test


def test_permutations_are_seeded_permutations():
    perms = _permutations(9, 40, seed=3)
    assert perms.shape == (40, 9)
    assert all(sorted(row.tolist()) == list(range(9)) for row in perms)
    assert torch.equal(perms, _permutations(9, 40, seed=3))
    assert not torch.equal(perms, _permutations(9, 40, seed=4))
    assert torch.equal(_permutations(9, 15, seed=3), perms[:15])  # one draw after another


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_p_values_equal_a_loop_over_the_same_permutations(kernel, unbiased):
    feats_a, feats_b = _related_layers(0, 14, [3, 20], [4, 2], noise=2.0)
    num_permutations, seed, sigma_frac = 60, 11, 0.7
    p = permutation_test(
        feats_a, feats_b, num_permutations, seed, kernel=kernel, unbiased=unbiased, sigma_frac=sigma_frac
    )
    perms = _permutations(14, num_permutations, seed).numpy()
    assert p.shape == (2, 2) and p.dtype == torch.float64
    for i, x in enumerate(feats_a):
        for j, y in enumerate(feats_b):
            x_np, y_np = x.numpy(), y.numpy()
            observed = _np_cka(x_np, y_np, kernel, unbiased, sigma_frac)
            permuted = np.array([_np_cka(x_np, y_np[perm], kernel, unbiased, sigma_frac) for perm in perms])
            expected = (1 + np.sum(permuted >= observed - 1e-12)) / (num_permutations + 1)
            assert float(p[i, j]) == pytest.approx(expected, abs=1e-15)
    assert len(set(p.flatten().tolist())) > 1  # the cells are not all at one value


def test_tied_permutations_count_as_exceeding():
    # n = 4 has 24 orderings, so 300 draws repeat the identity (and any ordering that leaves the
    # Gram unchanged) many times; each such draw ties the observed CKA and must be counted.
    x = _randn(torch.Generator().manual_seed(1), 4, 3)
    num_permutations = 300
    p = permutation_test([x], None, num_permutations, seed=5)
    gram = x.numpy() @ x.numpy().T
    gram = gram - gram.mean(0) - gram.mean(1)[:, None] + gram.mean()
    perms = _permutations(4, num_permutations, 5).numpy()
    ties = sum(np.allclose(gram[perm][:, perm], gram, rtol=1e-9, atol=1e-12) for perm in perms)
    assert ties >= 5
    assert float(p[0, 0]) * (num_permutations + 1) == pytest.approx(1 + ties, abs=1e-9)


@pytest.mark.parametrize(("kernel", "unbiased"), [("linear", False), ("rbf", True)])
def test_p_values_are_uniform_for_independent_data(kernel, unbiased):
    g = torch.Generator().manual_seed(2)
    p_values = []
    for seed in range(300):
        x, y = _randn(g, 12, 3), _randn(g, 12, 5)
        p_values.append(float(permutation_test([x], [y], 99, seed, kernel=kernel, unbiased=unbiased)[0, 0]))
    p_values = np.array(p_values)
    # A level-0.05 test rejects about 5% (binomial sd 1.3% over 300) and p is uniform on {k/100}.
    assert 0.015 <= np.mean(p_values <= 0.05) <= 0.09
    assert stats.kstest(p_values, "uniform").pvalue > 0.01
    assert p_values.min() >= 1 / 100


def test_dependent_data_reach_the_smallest_p_value():
    feats_a, feats_b = _related_layers(3, 40, [6, 30], [5, 8], noise=0.2)
    for kernel, unbiased in itertools.product(["linear", "rbf"], [False, True]):
        p = permutation_test(feats_a, feats_b, 199, kernel=kernel, unbiased=unbiased)
        torch.testing.assert_close(p, torch.full((2, 2), 1 / 200, dtype=torch.float64), rtol=0, atol=1e-15)


def test_seed_reproduces_and_another_seed_changes_the_draws():
    feats_a, feats_b = _related_layers(4, 16, [3, 6], [2, 5], noise=6.0)
    first = permutation_test(feats_a, feats_b, 200, seed=7)
    assert bool(((first > 0.05) & (first < 0.95)).all())  # intermediate p-values, which the draws do move
    assert torch.equal(first, permutation_test(feats_a, feats_b, 200, seed=7))
    assert not torch.equal(first, permutation_test(feats_a, feats_b, 200, seed=8))


def test_chunking_does_not_change_the_results(monkeypatch):
    feats_a, feats_b = _related_layers(5, 12, [3, 7], [4], noise=3.0)
    p = permutation_test(feats_a, feats_b, 50, seed=1, kernel="rbf")
    intervals = bootstrap_ci(feats_a, feats_b, 30, seed=1, kernel="rbf", unbiased=True)
    monkeypatch.setattr(resampling, "_CHUNK_ELEMENTS", 1)  # one draw per chunk
    torch.testing.assert_close(permutation_test(feats_a, feats_b, 50, seed=1, kernel="rbf"), p, rtol=0, atol=0)
    for chunked, whole in zip(bootstrap_ci(feats_a, feats_b, 30, seed=1, kernel="rbf", unbiased=True), intervals):
        torch.testing.assert_close(chunked, whole, rtol=1e-12, atol=1e-14)


def test_self_comparison_and_names():
    feats_a, _ = _related_layers(6, 30, [4, 12, 6], [], noise=0.3)
    feats = dict(zip(["stem", "block1", "head"], feats_a))
    p = permutation_test(feats, num_permutations=99)
    assert isinstance(p, LabeledMatrix) and p.rows == p.cols == ("stem", "block1", "head")
    torch.testing.assert_close(p.values.diagonal(), torch.full((3,), 0.01, dtype=torch.float64), rtol=0, atol=1e-15)
    named = permutation_test({"x": feats_a[0]}, {"y": feats_a[1]}, 99)
    assert named["x", "y"] == pytest.approx(float(p.values[0, 1]), abs=1e-15)


def test_constant_layer_has_nan_p_values():
    feats_a, feats_b = _related_layers(7, 20, [4], [3])
    with pytest.warns(ZeroVarianceWarning, match="dead"):
        p = permutation_test({"conv": feats_a[0], "dead": torch.zeros(20, 5)}, {"fc": feats_b[0]}, 20)
    assert torch.isnan(p.values[1, 0]) and torch.isfinite(p.values[0, 0])


# ----------------------------------------------------------------------------- bootstrap


def test_resample_indices_are_seeded_draws_with_replacement():
    idx = _resample_indices(10, 200, seed=2)
    assert idx.shape == (200, 10) and int(idx.min()) == 0 and int(idx.max()) == 9
    assert any(len(set(row.tolist())) < 10 for row in idx)  # repeats occur
    assert torch.equal(idx, _resample_indices(10, 200, seed=2))
    assert not torch.equal(idx, _resample_indices(10, 200, seed=3))


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_intervals_equal_a_loop_over_the_same_resamples(kernel, unbiased):
    n, num_resamples, seed, level, sigma_frac = 10, 24, 5, 0.8, 1.3
    feats_a, feats_b = _related_layers(8, n, [3, 16], [4, 2], noise=1.0)
    low, high = bootstrap_ci(feats_a, feats_b, num_resamples, seed, level, kernel, unbiased, sigma_frac)
    indices = _resample_indices(n, num_resamples, seed).numpy()
    assert low.shape == high.shape == (2, 2)
    for i, x in enumerate(feats_a):
        for j, y in enumerate(feats_b):
            replicates = [
                _np_bootstrap_replicate(x.numpy(), y.numpy(), idx, kernel, unbiased, sigma_frac) for idx in indices
            ]
            expected = np.quantile(replicates, [(1 - level) / 2, (1 + level) / 2])
            assert float(low[i, j]) == pytest.approx(expected[0], rel=RTOL, abs=1e-12)
            assert float(high[i, j]) == pytest.approx(expected[1], rel=RTOL, abs=1e-12)
            assert low[i, j] < high[i, j]


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_replicates_equal_each_resample_computed_directly(kernel, unbiased):
    n, num_resamples, seed, sigma_frac = 10, 12, 3, 0.9
    feats_a, feats_b = _related_layers(4, n, [3, 16], [4, 2], noise=1.0)
    replicates = bootstrap_replicates(feats_a, feats_b, num_resamples, seed, kernel, unbiased, sigma_frac)
    indices = _resample_indices(n, num_resamples, seed).numpy()
    assert replicates.shape == (num_resamples, 2, 2) and replicates.dtype == torch.float64
    for k, idx in enumerate(indices):
        for i, x in enumerate(feats_a):
            for j, y in enumerate(feats_b):
                expected = _np_bootstrap_replicate(x.numpy(), y.numpy(), idx, kernel, unbiased, sigma_frac)
                assert float(replicates[k, i, j]) == pytest.approx(expected, rel=RTOL, abs=1e-12)
    # the interval is the replicates' percentiles, cell by cell
    low, high = bootstrap_ci(feats_a, feats_b, num_resamples, seed, 0.9, kernel, unbiased, sigma_frac)
    assert torch.allclose(low, torch.quantile(replicates, 0.05, dim=0), rtol=0, atol=1e-15)
    assert torch.allclose(high, torch.quantile(replicates, 0.95, dim=0), rtol=0, atol=1e-15)


def test_replicates_of_a_constant_layer_are_nan():
    x = torch.randn(12, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with pytest.warns(ZeroVarianceWarning):
        replicates = bootstrap_replicates([x, torch.ones(12, 2, dtype=torch.float64)], [x], num_resamples=5)
    assert torch.isnan(replicates[:, 1, 0]).all() and not torch.isnan(replicates[:, 0, 0]).any()


def test_unbiased_replicate_without_repeats_is_the_estimate():
    # A resample that holds every example once is the sample itself.
    feats_a, feats_b = _related_layers(9, 12, [3, 30], [5], noise=1.0)
    for kernel in ("linear", "rbf"):
        sides = resampling._Sides.from_inputs(feats_a, feats_b, kernel, True)
        grams_a, grams_b, _, _ = resampling._full_sample_grams(sides, kernel, True, 1.0)
        layers_a = resampling._ResampledLayers(feats_a, grams_a, kernel, True, 1.0)
        layers_b = resampling._ResampledLayers(feats_b, grams_b, kernel, True, 1.0)
        cka, _, _ = resampling._resample_cka(layers_a, layers_b, torch.ones(1, 12, dtype=torch.int64), True)
        torch.testing.assert_close(
            cka[0], cka_matrix(feats_a, feats_b, kernel=kernel, unbiased=True), rtol=RTOL, atol=1e-12
        )


def test_unbiased_interval_of_wide_layers_covers_the_estimate():
    # d >> n: self-similarities ||x_i||^2 dwarf the cross terms. Replicates that let copies of an
    # example pair up (the unbiased formula applied to X[idx] as it is) sit near the biased
    # estimate, far above the unbiased one; the distinct-example replicates surround it.
    g = torch.Generator().manual_seed(3)
    n, d = 30, 600
    signal = _randn(g, n, 5)
    x = signal @ _randn(g, 5, d) + 8.0 * _randn(g, n, d)
    y = signal @ _randn(g, 5, d) + 8.0 * _randn(g, n, d)
    estimate = float(cka_matrix([x], [y], unbiased=True)[0, 0])
    low, high = bootstrap_ci([x], [y], 200, seed=0, unbiased=True)
    assert float(low[0, 0]) < estimate < float(high[0, 0])
    indices = _resample_indices(n, 200, 0)
    gram_x, gram_y = (center_gram_unbiased(f[indices] @ f[indices].transpose(1, 2)) for f in (x, y))
    with_copies = (gram_x * gram_y).sum((1, 2)) / torch.sqrt((gram_x**2).sum((1, 2)) * (gram_y**2).sum((1, 2)))
    assert float(torch.quantile(with_copies, 0.025)) > estimate + 0.3


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
@pytest.mark.parametrize("unbiased", [False, True])
def test_intervals_contain_the_estimate(kernel, unbiased):
    feats_a, feats_b = _related_layers(10, 60, [5, 20], [6, 3], noise=0.5)
    estimate = cka_matrix(feats_a, feats_b, kernel=kernel, unbiased=unbiased)
    low, high = bootstrap_ci(feats_a, feats_b, 200, seed=1, kernel=kernel, unbiased=unbiased)
    assert bool((low < estimate).all() and (estimate < high).all())
    assert bool((high - low > 0.01).all())
    if unbiased:  # replicates carry no bias of their own: the estimate sits mid-interval
        position = (estimate - low) / (high - low)
        assert bool(((position > 0.3) & (position < 0.7)).all())


def test_more_examples_give_narrower_intervals():
    small_a, small_b = _related_layers(11, 40, [5], [4], noise=1.0)
    large_a, large_b = _related_layers(11, 320, [5], [4], noise=1.0)
    width_small = torch.sub(*reversed(bootstrap_ci(small_a, small_b, 200)))
    width_large = torch.sub(*reversed(bootstrap_ci(large_a, large_b, 200)))
    assert float(width_large[0, 0]) < 0.6 * float(width_small[0, 0])  # ~ 1/sqrt(8) expected


def test_bootstrap_self_comparison():
    feats_a, _ = _related_layers(12, 30, [4, 9], [], noise=0.5)
    low, high = bootstrap_ci(dict(zip(["a", "b"], feats_a)), num_resamples=50)
    assert isinstance(low, LabeledMatrix) and low.rows == low.cols == ("a", "b")
    for bound in (low.values, high.values):
        torch.testing.assert_close(bound.diagonal(), torch.ones(2, dtype=torch.float64), rtol=0, atol=1e-12)
        torch.testing.assert_close(bound, bound.T, rtol=0, atol=1e-12)
    assert low["a", "b"] < high["a", "b"] < 1


def test_bootstrap_seed_and_level():
    feats_a, feats_b = _related_layers(13, 25, [4], [3], noise=1.0)
    first = bootstrap_ci(feats_a, feats_b, 100, seed=4)
    assert all(torch.equal(p, q) for p, q in zip(first, bootstrap_ci(feats_a, feats_b, 100, seed=4)))
    assert not torch.equal(first[0], bootstrap_ci(feats_a, feats_b, 100, seed=5)[0])
    narrow = bootstrap_ci(feats_a, feats_b, 100, seed=4, level=0.5)
    assert first[0] < narrow[0] < narrow[1] < first[1]


def test_layer_constant_on_some_resamples_gives_nan_interval():
    # One non-zero example: every resample that misses it (about 1/e of them) has a constant layer.
    feats_a, feats_b = _related_layers(14, 20, [4], [3])
    sparse = torch.zeros(20, 6, dtype=torch.float64)
    sparse[3] = 1.0
    with pytest.warns(ZeroVarianceWarning, match="sparse"):
        low, high = bootstrap_ci({"conv": feats_a[0], "sparse": sparse}, {"fc": feats_b[0]}, 50)
    assert torch.isnan(low.values[1, 0]) and torch.isnan(high.values[1, 0])
    assert torch.isfinite(low.values[0, 0]) and torch.isfinite(high.values[0, 0])
    with pytest.warns(ZeroVarianceWarning, match="dead"):
        low, _ = bootstrap_ci({"conv": feats_a[0], "dead": torch.zeros(20, 2)}, {"fc": feats_b[0]}, 20)
    assert torch.isnan(low.values[1, 0])


def test_resamples_with_fewer_than_four_distinct_examples_are_undefined():
    # n = 6: about a quarter of the resamples hold at most 3 distinct examples.
    feats_a, feats_b = _related_layers(15, 6, [3], [2])
    with pytest.warns(ZeroVarianceWarning, match="fewer than 4 distinct"):
        low, high = bootstrap_ci(feats_a, feats_b, 30, unbiased=True)
    assert torch.isnan(low[0, 0]) and torch.isnan(high[0, 0])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.isfinite(bootstrap_ci(feats_a, feats_b, 30)[0][0, 0])  # biased: defined


# ----------------------------------------------------------------------------- errors


@pytest.mark.parametrize("count", [0, -3, 2.5, True])
def test_bad_draw_counts_are_errors(count):
    x = torch.randn(8, 3)
    with pytest.raises(CKAProbeError, match="num_permutations must be a positive integer"):
        permutation_test([x], [x], num_permutations=count)
    with pytest.raises(CKAProbeError, match="num_resamples must be a positive integer"):
        bootstrap_ci([x], [x], num_resamples=count)


@pytest.mark.parametrize("level", [0.0, 1.0, 1.5, -0.2])
def test_level_outside_unit_interval_is_an_error(level):
    x = torch.randn(8, 3)
    with pytest.raises(CKAProbeError, match=r"level must lie in \(0, 1\)"):
        bootstrap_ci([x], [x], level=level)


def test_input_errors():
    x = torch.randn(3, 4)
    with pytest.raises(ShapeError, match="at least 4 examples"):
        permutation_test([x], [x], unbiased=True)
    with pytest.raises(ShapeError, match="at least 4 examples"):
        bootstrap_ci([x], [x], unbiased=True)
    with pytest.raises(ShapeError, match="different numbers of examples"):
        permutation_test([torch.randn(8, 2)], [torch.randn(9, 2)])
    with pytest.raises(KernelError, match="unknown kernel"):
        bootstrap_ci([torch.randn(8, 2)], kernel="poly")
    with pytest.raises(KernelError, match="bandwidth fraction must be > 0"):
        bootstrap_ci([torch.randn(8, 2)], kernel="rbf", sigma_frac=0.0)
