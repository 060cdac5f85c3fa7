"""Regression tests for the edge numerics of issue 8 (section 2), each from the issue's repro.

Expected values come from the float64 NumPy reference or from exact invariances of CKA.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cka_probe.errors import PrecisionError
from cka_probe.math import (
    Gram,
    MinibatchCKA,
    ZeroVarianceWarning,
    cka_matrix,
    linear_cka,
    rbf_cka,
    squared_distances,
)

from . import reference

settings.register_profile("edge", max_examples=30, deadline=None)


def _estimators(x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    """Every estimator on one pair (the minibatch one on a single batch, where it is the unbiased one)."""
    metric = MinibatchCKA()
    metric.update([x], [y])
    values = {
        "linear": linear_cka(x, y),
        "linear_unbiased": linear_cka(x, y, unbiased=True),
        "rbf": rbf_cka(x, y),
        "rbf_unbiased": rbf_cka(x, y, unbiased=True),
        "matrix": cka_matrix([x], [y])[0, 0],
        "matrix_unbiased": cka_matrix([x], [y], unbiased=True)[0, 0],
        "matrix_rbf": cka_matrix([x], [y], kernel="rbf")[0, 0],
        "minibatch": metric.compute()[0, 0],
    }
    return {k: float(v) for k, v in values.items()}


def _pair(seed: int, n: int = 40, p: int = 6, q: int = 9) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64)
    y = torch.tanh(x @ torch.randn(p, q, generator=g, dtype=torch.float64)) + 0.5 * torch.randn(
        n, q, generator=g, dtype=torch.float64
    )
    return x, y


# ----------------------------------------------------------------------------- constant layers


def test_minibatch_detects_a_nonzero_constant_layer_as_cka_matrix_does():
    # Issue repro: MinibatchCKA returned 4e-18 and no warning.
    x = torch.tensor([[0.1, 0.2, 0.3]], dtype=torch.float64).repeat(100, 1)
    y = torch.arange(200.0, dtype=torch.float64).reshape(100, 2).sin()
    metric = MinibatchCKA()
    metric.update({"const": x}, {"y": y})
    with pytest.warns(ZeroVarianceWarning, match=r"layer\(s\) const are constant"):
        assert torch.isnan(metric.compute().values).all()
    with pytest.warns(ZeroVarianceWarning, match=r"layer\(s\) const are constant"):
        assert torch.isnan(cka_matrix({"const": x}, {"y": y}).values).all()
    split = MinibatchCKA()
    for rows in (slice(0, 50), slice(50, 100)):
        split.update({"const": x[rows]}, {"y": y[rows]})
    with pytest.warns(ZeroVarianceWarning, match="const"):
        assert torch.isnan(split.compute().values).all()


def test_both_constant_inputs_are_named_in_one_warning():
    with pytest.warns(ZeroVarianceWarning) as record:
        assert torch.isnan(linear_cka(torch.full((10, 3), 2.5), torch.zeros(10, 2)))
    assert len(record) == 1 and "layer(s) x, y are constant" in str(record[0].message)
    with pytest.warns(ZeroVarianceWarning) as record:
        assert torch.isnan(rbf_cka(torch.full((10, 3), 2.5), torch.zeros(10, 2), unbiased=True))
    assert len(record) == 1 and "layer(s) x, y are constant" in str(record[0].message)
    metric = MinibatchCKA()
    metric.update({"a": torch.full((8, 3), 1.5)}, {"b": torch.ones(8, 2)})
    with pytest.warns(ZeroVarianceWarning, match=r"layer\(s\) a, b are constant"):
        metric.compute()


# ----------------------------------------------------------------------------- centring first


def test_unbiased_linear_cka_centres_before_the_gram():
    # Issue repro: linear_cka(1 + 1e-6 z, y, unbiased=True) was NaN ("constant"); at 1e-5 off by 9e-9.
    z, y = _pair(1)
    expected = reference.linear_cka(z.numpy(), y.numpy(), unbiased=True)
    for eps in (1e-6, 1e-5):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert float(linear_cka(1 + eps * z, y, unbiased=True)) == pytest.approx(expected, rel=1e-8)
    # max(p, q) >= n: the Gram-space branch of the biased estimator
    g = torch.Generator().manual_seed(2)
    wide = torch.randn(12, 30, generator=g, dtype=torch.float64)
    other = wide[:, :5] + 0.1 * torch.randn(12, 5, generator=g, dtype=torch.float64)
    assert float(linear_cka(1 + 1e-6 * wide, other)) == pytest.approx(
        reference.linear_cka(wide.numpy(), other.numpy()), rel=1e-8
    )


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_translating_or_scaling_inputs_changes_no_estimator(seed):
    x, y = _pair(10 + seed)
    g = torch.Generator().manual_seed(seed)
    before = _estimators(x, y)
    shift = 3.0 * torch.randn(1, x.shape[1], generator=g, dtype=torch.float64)
    for moved_x, moved_y in ((x + shift, y), (7.5 * x, 0.2 * y), (0.3 * x - shift, y + 1.0)):
        after = _estimators(moved_x, moved_y)
        for name, value in before.items():
            assert after[name] == pytest.approx(value, abs=1e-12), name


@pytest.mark.parametrize("unbiased", [False, True])
def test_linear_cka_equals_cka_matrix_pair_by_pair(unbiased):
    g = torch.Generator().manual_seed(3)
    feats_a = [torch.randn(20, d, generator=g, dtype=torch.float64) + 5.0 for d in (3, 19, 20, 64)]
    feats_b = [torch.relu(feats_a[0] @ torch.randn(3, d, generator=g, dtype=torch.float64)) - 2.0 for d in (2, 40)]
    matrix = cka_matrix(feats_a, feats_b, unbiased=unbiased)
    for i, x in enumerate(feats_a):
        for j, y in enumerate(feats_b):
            assert float(matrix[i, j]) == pytest.approx(float(linear_cka(x, y, unbiased=unbiased)), abs=1e-12)


# ----------------------------------------------------------------------------- identical rows


def test_rbf_cka_does_not_depend_on_row_order_with_many_identical_rows():
    # Issue repro: with 80 of 100 rows equal, a 2e-16 residue became the median bandwidth.
    rng = np.random.default_rng(8)
    x = rng.normal(size=(100, 10))
    x[:80] = x[0]
    y = rng.normal(size=(100, 5))
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    sq_dist = squared_distances(xt)
    assert int((sq_dist == 0).sum()) == 80 * 80 + 20  # exact zeros: the identical block and the diagonal
    assert torch.equal(squared_distances(Gram(xt @ xt.T)) == 0, sq_dist == 0)
    with pytest.warns(ZeroVarianceWarning, match="median bandwidth is 0"):
        forward = rbf_cka(xt, yt)
    with pytest.warns(ZeroVarianceWarning, match="median bandwidth is 0"):
        flipped = rbf_cka(xt.flip(0), yt.flip(0))
    assert torch.isnan(forward) and torch.isnan(flipped)  # the median of the distances is 0 either way
    # 40 of 100 rows equal: the bandwidth is defined and the value is the reference's in both orders
    x[:80] = rng.normal(size=(80, 10))
    x[:40] = x[0]
    xt = torch.from_numpy(x)
    expected = reference.rbf_cka(x, y)
    assert float(rbf_cka(xt, yt)) == pytest.approx(expected, rel=1e-9)
    assert float(rbf_cka(xt.flip(0), yt.flip(0))) == pytest.approx(expected, rel=1e-9)


@settings(settings.get_profile("edge"))
@given(
    st.integers(8, 24),
    st.integers(1, 10),
    st.integers(1, 10),
    st.integers(0, 2**31 - 1),
    st.floats(0.0, 0.45),
)
def test_permuting_samples_changes_no_estimator(n, p, q, seed, duplicated):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, p, generator=g, dtype=torch.float64) * 2.0 + 1.0
    y = torch.randn(n, q, generator=g, dtype=torch.float64) + x[:, :1]
    copies = int(duplicated * n)
    if copies > 1:
        x[:copies] = x[0]  # identical rows, fewer than half of the pairs
    perm = torch.randperm(n, generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ZeroVarianceWarning)
        before, after = _estimators(x, y), _estimators(x[perm], y[perm])
    for name, value in before.items():
        assert after[name] == pytest.approx(value, abs=1e-12, nan_ok=True), name


# ----------------------------------------------------------------------------- precision option


def test_float32_matrix_is_within_1e_6_of_float64():
    g = torch.Generator().manual_seed(4)
    base = torch.randn(256, 16, generator=g)
    feats = [
        torch.tanh(base @ torch.randn(16, d, generator=g)) + 0.3 * torch.randn(256, d, generator=g)
        for d in (64, 300, 1024)
    ]
    for unbiased in (False, True):
        exact = cka_matrix(feats, unbiased=unbiased)
        single = cka_matrix(feats, unbiased=unbiased, dtype=torch.float32)
        assert single.dtype == torch.float64
        assert float((single - exact).abs().max()) <= 1e-6
        assert torch.equal(single, cka_matrix(feats, unbiased=unbiased, dtype="float32"))
    constant = torch.tensor([[0.1, 0.7, 3.3]]).repeat(256, 1)  # float32, whose mean is not exact in float32
    for dtype in (torch.float32, torch.float64):
        with pytest.warns(ZeroVarianceWarning, match="dead"):
            values = cka_matrix({"dead": constant, "live": feats[0]}, dtype=dtype).values
        assert torch.isnan(values[0]).all() and torch.isfinite(values[1, 1])
    previous = torch.get_float32_matmul_precision()
    try:  # TF32 allowed by the caller: cka_matrix still multiplies in float32 and restores the setting
        torch.set_float32_matmul_precision("medium")
        assert float((cka_matrix(feats, dtype=torch.float32) - cka_matrix(feats)).abs().max()) <= 1e-6
        assert torch.get_float32_matmul_precision() == "medium"
    finally:
        torch.set_float32_matmul_precision(previous)
    with pytest.raises(PrecisionError, match="choose one of float64, float32"):
        cka_matrix(feats, dtype=torch.float16)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cuda_matrix_equals_cpu_matrix(dtype):
    g = torch.Generator().manual_seed(5)
    feats = [torch.randn(64, d, generator=g) for d in (16, 128, 128, 700)]
    grams = [Gram(f.double() @ f.double().T) for f in feats]
    cpu = cka_matrix(feats, grams, unbiased=True, dtype=dtype)
    gpu = cka_matrix([f.cuda() for f in feats], [k.to("cuda") for k in grams], unbiased=True, dtype=dtype)
    assert gpu.device.type == "cuda"
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=0, atol=1e-12 if dtype == torch.float64 else 1e-6)


@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_batched_and_per_layer_gram_formation_match_the_reference(monkeypatch, torch_threads, batched, dtype):
    # The batched path is the one CUDA takes; the CPU goes layer by layer through BLAS's syrk, on one
    # thread or several. Every combination runs on the CPU against the NumPy reference.
    from cka_probe.math import engine

    monkeypatch.setattr(engine, "_BATCHED_GRAMS", batched)
    g = torch.Generator().manual_seed(6)
    feats = [torch.relu(torch.randn(70, d, generator=g)) + 0.5 for d in (8, 30, 8, 100, 30)]
    feats[2] = feats[2][:, :5] @ torch.randn(5, 8, generator=g)
    for unbiased in (False, True):
        matrix = cka_matrix(feats, [feats[0], feats[3]], unbiased=unbiased, dtype=dtype)
        for i, x in enumerate(feats):
            for j, y in enumerate((feats[0], feats[3])):
                expected = reference.linear_cka(x.double().numpy(), y.double().numpy(), unbiased)
                tolerance = {"rel": 1e-9} if dtype == torch.float64 else {"abs": 1e-6}
                assert float(matrix[i, j]) == pytest.approx(expected, **tolerance)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_mixed_input_dtypes_on_both_sides_match_the_reference(torch_threads, dtype):
    # The CPU pass takes the layers of both sides from one queue, on torch's number of threads; narrower
    # inputs are widened in the worker threads, float64 inputs in float32 work centred in float64 first.
    g = torch.Generator().manual_seed(11)
    base = [torch.relu(torch.randn(40, d, generator=g)) + 0.25 for d in (300, 12, 64, 7, 129)]
    feats_a = [base[0].half(), base[1].bfloat16(), base[2].double(), base[3], base[4]]
    feats_b = [base[4].half(), base[2], base[0].double()]
    exact_a = [f.double().numpy() for f in feats_a]  # what each input holds, exactly
    exact_b = [f.double().numpy() for f in feats_b]
    for unbiased in (False, True):
        matrix = cka_matrix(feats_a, feats_b, unbiased=unbiased, dtype=dtype)
        expected = np.array([[reference.linear_cka(x, y, unbiased) for y in exact_b] for x in exact_a])
        exact = dtype == torch.float64
        np.testing.assert_allclose(matrix.numpy(), expected, rtol=1e-9 if exact else 0, atol=0 if exact else 1e-6)


def test_a_failure_in_a_gram_thread_reaches_the_caller(monkeypatch):
    from cka_probe.math import engine

    calls = []

    def failing(x, out, accumulate=False):
        calls.append(x.shape[1])
        raise MemoryError("no room for this Gram")

    monkeypatch.setattr(engine, "numpy_gram_", failing)
    previous = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        with pytest.raises(MemoryError, match="no room"):
            cka_matrix([torch.randn(16, d) for d in (5, 6, 7, 8, 9, 10)])
    finally:
        torch.set_num_threads(previous)
    assert len(calls) <= 2  # each thread stops at the first failure


@pytest.mark.parametrize("ratio", [0, 10**9])
@pytest.mark.parametrize("batched", [False, True])
@pytest.mark.parametrize("unbiased", [False, True])
def test_packed_and_in_place_triangles_give_the_reference(monkeypatch, ratio, batched, unbiased):
    # cka_matrix gathers the upper triangles for many layers, and always in the CPU pass of linear
    # features; force either representation here (in place only with the batched Grams).
    from cka_probe.math import engine

    monkeypatch.setattr(engine, "_PACK_RATIO", ratio)
    monkeypatch.setattr(engine, "_BATCHED_GRAMS", batched)
    g = torch.Generator().manual_seed(8)
    feats = [torch.randn(33, d, generator=g, dtype=torch.float64) + 1.0 for d in (4, 50, 7)]
    grams = {"g": Gram(feats[1] @ feats[1].T)}
    matrix = cka_matrix(feats, {"f": feats[0], **grams}, unbiased=unbiased, kernel="linear")
    for i, x in enumerate(feats):
        for j, y in enumerate((feats[0], feats[1])):
            expected = reference.linear_cka(x.numpy(), y.numpy(), unbiased)
            assert float(matrix[i, j]) == pytest.approx(expected, rel=1e-9)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1, 3), (9, 1), (70, 300), (130, 17)])
def test_upper_gram_matches_the_float64_product(torch_threads, dtype, shape):
    # upper_gram_ takes BLAS's syrk through NumPy with one thread and block rows of torch.mm otherwise: both
    # must give the upper triangle of x x^T, overwritten or accumulated, in place or into a strided tensor.
    from cka_probe.math.kernels import upper_gram_

    g = torch.Generator().manual_seed(sum(shape))
    x = torch.randn(*shape, generator=g, dtype=torch.float64).to(dtype)
    n = shape[0]
    expected = (x.double() @ x.double().T).numpy()
    upper = np.triu_indices(n)
    tolerance = 1e-12 if dtype == torch.float64 else 1e-5
    scale = 2 * np.abs(expected).max()  # float32 sums of d terms: error relative to the largest entry
    out = torch.full((n, n), 7.0, dtype=dtype)
    assert upper_gram_(x, out) is out
    np.testing.assert_allclose(out.double().numpy()[upper], expected[upper], rtol=tolerance, atol=tolerance * scale)
    upper_gram_(x, out, accumulate=True)
    np.testing.assert_allclose(out.double().numpy()[upper], 2 * expected[upper], rtol=tolerance, atol=tolerance * scale)
    strided = torch.full((n, 2 * n), 7.0, dtype=dtype)[:, ::2]
    upper_gram_(x, strided)
    np.testing.assert_allclose(strided.double().numpy()[upper], expected[upper], rtol=tolerance, atol=tolerance * scale)


@pytest.mark.parametrize("offset", [0.0, 5.0, 10.0, 1e4])
def test_float32_centring_matches_the_reference_at_any_offset(torch_threads, offset):
    # In float32 the features are centred once, and a second time only where n ||mean||^2 exceeds 3 tr(X_c X_c^T)
    # after the first pass (here from a mean/spread ratio of about 1.7): both sides of that line, and an offset
    # whose first-pass rounding alone would move the unbiased estimate by ~1e-3.
    g = torch.Generator().manual_seed(12)
    base = torch.randn(96, 24, generator=g)
    feats = [base @ torch.randn(24, d, generator=g) + offset * (1 + torch.rand(d, generator=g)) for d in (5, 40, 300)]
    feats.append(torch.relu(feats[1] - offset))
    # centred in float64 before the reference's Gram: CKA does not change, and the reference's Gram of the raw
    # features would itself lose digits at the largest offset (1.7e-6 biased, the unbiased value entirely)
    exact = [f.double().numpy() - f.double().numpy().mean(axis=0) for f in feats]
    for unbiased in (False, True):
        matrix = cka_matrix(feats, unbiased=unbiased, dtype=torch.float32)
        expected = np.array([[reference.linear_cka(x, y, unbiased) for y in exact] for x in exact])
        np.testing.assert_allclose(matrix.numpy(), expected, rtol=0, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_gram_gives_the_upper_triangle_from_concurrent_threads(dtype):
    # numpy_gram_ calls BLAS's syrk through ctypes with the GIL released, sharing its argument constants between
    # threads: each call must still get its own product, written above the diagonal only. Layouts it cannot pass
    # to BLAS (a strided x, a column-major or strided out, x inside out's memory, no columns) go through NumPy.
    from concurrent.futures import ThreadPoolExecutor

    from cka_probe.math.kernels import numpy_gram_, one_blas_thread

    rng = np.random.default_rng(3)
    arrays = [rng.standard_normal((n, d)).astype(dtype) for n, d in ((64, 1), (64, 700), (9, 33), (128, 256), (1, 5))]
    tolerance = 1e-12 if dtype == np.float64 else 2e-5

    def check(x, out, factor=1.0):
        expected = factor * (x.astype(np.float64) @ x.astype(np.float64).T)
        upper = np.triu_indices(x.shape[0])
        scale = np.abs(expected).max()
        np.testing.assert_allclose(out[upper], expected[upper], rtol=tolerance, atol=tolerance * scale)

    def run(x):
        out = np.full((x.shape[0], x.shape[0]), np.nan, dtype=dtype)
        assert numpy_gram_(x, out) is out
        check(x, out)
        assert np.isnan(out[np.tril_indices(x.shape[0], -1)]).all()  # below the diagonal: untouched
        numpy_gram_(x, out, accumulate=True)
        check(x, out, 2.0)
        return True

    with one_blas_thread(), ThreadPoolExecutor(4) as pool:
        assert all(pool.map(run, arrays * 4))
    x = arrays[2]
    for out in (np.zeros((9, 9), dtype=dtype, order="F"), np.zeros((9, 18), dtype=dtype)[:, ::2]):
        numpy_gram_(x[:, ::2], out)
        check(x[:, ::2], out)
    shared = np.zeros((9, 9), dtype=dtype)  # x a C-contiguous view of out's own memory
    x = shared.reshape(-1)[:27].reshape(9, 3)
    x[...] = arrays[2][:, :3]
    expected = x.astype(np.float64) @ x.astype(np.float64).T
    numpy_gram_(x, shared)
    np.testing.assert_allclose(shared[np.triu_indices(9)], expected[np.triu_indices(9)], rtol=tolerance)
    empty = np.zeros((4, 0), dtype=dtype)
    np.testing.assert_array_equal(numpy_gram_(empty, np.full((4, 4), 3.0, dtype=dtype)), np.zeros((4, 4)))
