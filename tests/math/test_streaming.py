"""MinibatchCKA against the reference computed batch by batch."""

from __future__ import annotations

import pytest
import torch

from cka_probe import LabeledMatrix, MinibatchCKA, ZeroVarianceWarning
from cka_probe.errors import ShapeError

from . import reference


def _layers(seed: int, n: int, dims):
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(n, 6, generator=g, dtype=torch.float64)
    return [
        torch.tanh(base @ torch.randn(6, d, generator=g, dtype=torch.float64))
        + 0.2 * torch.randn(n, d, generator=g, dtype=torch.float64)
        for d in dims
    ]


@pytest.mark.parametrize("kernel", ["linear", "rbf"])
def test_accumulator_equals_reference_batch_by_batch(kernel):
    feats_a, feats_b = _layers(0, 60, [4, 9, 3]), _layers(1, 60, [5, 2])
    metric = MinibatchCKA(kernel=kernel)
    batches = [slice(0, 20), slice(20, 45), slice(45, 60)]  # unequal batch sizes
    for s in batches:
        metric.update([f[s] for f in feats_a], [f[s] for f in feats_b])
    result = metric.compute()
    assert result.shape == (3, 2)
    ref_kernel = reference.gram_linear if kernel == "linear" else reference.gram_rbf
    for i, x in enumerate(feats_a):
        for j, y in enumerate(feats_b):
            expected = reference.minibatch_cka(
                [x[s].numpy() for s in batches], [y[s].numpy() for s in batches], ref_kernel
            )
            assert float(result[i, j]) == pytest.approx(expected, rel=1e-9)
    assert metric.num_batches == 3 and metric.num_examples == 60


def test_every_batch_counts_not_only_the_last():
    feats_a, feats_b = _layers(2, 40, [5]), _layers(3, 40, [5])
    full = MinibatchCKA()
    last_only = MinibatchCKA()
    for s in (slice(0, 20), slice(20, 40)):
        full.update([feats_a[0][s]], [feats_b[0][s]])
    last_only.update([feats_a[0][20:]], [feats_b[0][20:]])
    assert float(full.compute()[0, 0]) != pytest.approx(float(last_only.compute()[0, 0]), rel=1e-6)


def test_self_comparison_and_names():
    feats = dict(zip(["stem", "block1", "head"], _layers(4, 32, [3, 8, 2])))
    metric = MinibatchCKA()
    for s in (slice(0, 16), slice(16, 32)):
        metric.update({k: v[s] for k, v in feats.items()})
    result = metric.compute()
    assert isinstance(result, LabeledMatrix) and result.rows == result.cols == ("stem", "block1", "head")
    torch.testing.assert_close(result.values.diagonal(), torch.ones(3, dtype=torch.float64), rtol=0, atol=1e-12)
    torch.testing.assert_close(result.values, result.values.T, rtol=0, atol=1e-14)
    expected = reference.minibatch_cka(
        [feats["stem"][s].numpy() for s in (slice(0, 16), slice(16, 32))],
        [feats["head"][s].numpy() for s in (slice(0, 16), slice(16, 32))],
    )
    assert result["stem", "head"] == pytest.approx(expected, rel=1e-9)


def test_merge_equals_single_accumulator():
    feats_a, feats_b = _layers(5, 48, [4, 6]), _layers(6, 48, [3])
    single, part1, part2 = MinibatchCKA(), MinibatchCKA(), MinibatchCKA()
    for k, s in enumerate((slice(0, 16), slice(16, 32), slice(32, 48))):
        single.update([f[s] for f in feats_a], [f[s] for f in feats_b])
        (part1 if k < 2 else part2).update([f[s] for f in feats_a], [f[s] for f in feats_b])
    merged = part1.merge(part2)
    torch.testing.assert_close(merged.compute(), single.compute(), rtol=1e-12, atol=0)
    assert merged.num_batches == 3


def test_sync_sums_over_two_processes(tmp_path):
    """Two gloo processes, each with half of the batches, sync to the statistics of one process seeing all."""
    import multiprocessing

    from . import _sync_worker

    # fork: the workers inherit the imported package, so the test takes about a second
    context = multiprocessing.get_context("fork")
    outs = [tmp_path / f"rank{rank}.pt" for rank in range(2)]
    procs = [
        context.Process(target=_sync_worker.main, args=(rank, 2, str(tmp_path / "rendezvous"), str(outs[rank])))
        for rank in range(2)
    ]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]

    single = MinibatchCKA()
    all_batches = _sync_worker.batches()
    for feats_a, feats_b in all_batches:
        single.update(feats_a, feats_b)
    expected = single.statistics()
    for out in outs:
        synced = torch.load(out, weights_only=True)
        for key, value in expected.items():
            torch.testing.assert_close(synced[key], value, rtol=1e-12, atol=1e-15)
        torch.testing.assert_close(synced["cka"], single.compute().values, rtol=1e-12, atol=0)
    assert expected["counts"].tolist() == [4.0, 42.0]
    # and the synced CKA is the reference minibatch estimator over all four batches
    for i, name in enumerate(("a0", "a1")):
        ref = reference.minibatch_cka(
            [a[name].numpy() for a, _ in all_batches], [b["b0"].numpy() for _, b in all_batches]
        )
        assert float(synced["cka"][i, 0]) == pytest.approx(ref, rel=1e-9)


def test_errors():
    metric = MinibatchCKA()
    with pytest.raises(ShapeError, match="before any update"):
        metric.compute()
    with pytest.raises(ShapeError, match="at least 4"):
        metric.update([torch.randn(3, 2)], [torch.randn(3, 2)])
    metric.update({"a": torch.randn(8, 2)}, {"b": torch.randn(8, 2)})
    with pytest.raises(ShapeError, match="same layers"):
        metric.update({"a": torch.randn(8, 2), "c": torch.randn(8, 2)}, {"b": torch.randn(8, 2)})
    with pytest.raises(ShapeError, match="self-comparison"):
        metric.update({"a": torch.randn(8, 2)})


def test_constant_layer_is_nan():
    metric = MinibatchCKA()
    metric.update({"live": torch.randn(8, 3), "dead": torch.zeros(8, 3)}, {"b": torch.randn(8, 2)})
    with pytest.warns(ZeroVarianceWarning, match="dead"):
        result = metric.compute()
    assert torch.isnan(result.values[1]).all() and torch.isfinite(result.values[0]).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_minibatch_cka_equals_the_cpu_one():
    g = torch.Generator().manual_seed(9)
    batches = [(torch.randn(16, 7, generator=g), torch.randn(16, 30, generator=g)) for _ in range(3)]
    cpu, gpu = MinibatchCKA(), MinibatchCKA()
    for x, y in batches:
        cpu.update({"x": x}, {"y": y})
        gpu.update({"x": x.cuda()}, {"y": y.cuda()})
    on_gpu = gpu.compute().values
    assert on_gpu.device.type == "cuda"
    torch.testing.assert_close(on_gpu.cpu(), cpu.compute().values, rtol=0, atol=1e-12)
