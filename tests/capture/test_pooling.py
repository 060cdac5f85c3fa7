"""pool_activation against a float64 reference, for every layout, token mode and dtype."""

from __future__ import annotations

import pytest
import torch

from cka_probe.capture.pooling import pool_activation
from cka_probe.errors import LayerSelectionError, ShapeError

GEN = torch.Generator().manual_seed(0)


def _randn(*shape):
    return torch.randn(*shape, generator=GEN)


@pytest.mark.parametrize(
    ("layout", "shape", "reference"),
    [
        ("NCHW", (3, 5, 4, 6), lambda x: x.double().flatten(2).mean(-1)),
        ("NHWC", (3, 4, 6, 5), lambda x: x.double().permute(0, 3, 1, 2).flatten(2).mean(-1)),
        ("NCL", (3, 5, 7), lambda x: x.double().mean(-1)),
        ("NLC", (3, 7, 5), lambda x: x.double().transpose(1, 2).mean(-1)),
        ("NCDHW", (2, 5, 2, 3, 4), lambda x: x.double().flatten(2).mean(-1)),
        ("NDHWC", (2, 2, 3, 4, 5), lambda x: x.double().flatten(1, 3).mean(1)),
        ("NC", (3, 5), lambda x: x.double()),
    ],
)
def test_mean_pool_matches_reference(layout, shape, reference):
    x = _randn(*shape)
    pooled = pool_activation(x, layout)
    assert pooled.dtype == torch.float32
    assert pooled.shape == (shape[0], 5)
    torch.testing.assert_close(pooled.double(), reference(x), rtol=1e-6, atol=1e-6)


def test_max_pool_is_per_channel_maximum():
    x = _randn(2, 3, 4, 4)
    torch.testing.assert_close(pool_activation(x, "NCHW", pool="max"), x.flatten(2).max(-1).values)
    y = x.permute(0, 2, 3, 1)  # the same map channels last
    torch.testing.assert_close(pool_activation(y, "NHWC", pool="max"), x.flatten(2).max(-1).values)


def test_token_modes_with_prefix_tokens():
    x = _randn(2, 6, 4)  # 2 prefix tokens, 4 patch tokens
    torch.testing.assert_close(pool_activation(x, "NLC", prefix_tokens=2), x[:, 2:].mean(1))
    torch.testing.assert_close(pool_activation(x, "NLC", prefix_tokens=2, tokens="all"), x.mean(1))
    torch.testing.assert_close(pool_activation(x, "NLC", prefix_tokens=2, tokens="cls"), x[:, 0])
    torch.testing.assert_close(pool_activation(x, "NLC", prefix_tokens=2, pool="max"), x[:, 2:].amax(1))


def test_tokens_ignored_without_prefix_tokens():
    x = _randn(2, 6, 4)
    for tokens in ("patch", "all", "cls"):
        torch.testing.assert_close(pool_activation(x, "NLC", prefix_tokens=0, tokens=tokens), x.mean(1))


@pytest.mark.parametrize(
    ("layout", "shape", "kwargs"),
    [
        ("NC", (2, 4), {}),
        ("NCHW", (2, 4, 3, 3), {}),
        ("NLC", (2, 5, 4), {"prefix_tokens": 1, "tokens": "cls"}),
        ("NCHW", (2, 4, 1, 1), {}),
    ],
)
def test_result_never_shares_storage(layout, shape, kwargs):
    x = _randn(*shape)
    pooled = pool_activation(x, layout, **kwargs)
    expected = pooled.clone()
    x.mul_(-3.0).add_(100.0)
    torch.testing.assert_close(pooled, expected)


def test_bfloat16_is_accumulated_in_float32():
    # 4096 positions of one bf16 value 1.0078125 (1 + 2^-7) plus one outlier: a bf16 running sum
    # loses the small part (its spacing near 4096 is 32), a float32 one keeps it.
    x = torch.full((1, 1, 64, 64), 1.0078125, dtype=torch.bfloat16)
    x[0, 0, 0, 0] = 3.0
    pooled = pool_activation(x, "NCHW")
    assert pooled.dtype == torch.float32
    expected = (x.double().sum() / 4096).item()
    assert abs(pooled.item() - expected) < 1e-6


def test_detached_from_autograd():
    x = _randn(2, 3, 4, 4).requires_grad_()
    pooled = pool_activation(x * 2, "NCHW")
    assert not pooled.requires_grad and pooled.grad_fn is None


def test_errors():
    with pytest.raises(ShapeError, match="must be 4-D"):
        pool_activation(_randn(2, 3, 4), "NCHW")
    with pytest.raises(ShapeError, match="no patch token"):
        pool_activation(_randn(2, 1, 4), "NLC", prefix_tokens=1)
    with pytest.raises(LayerSelectionError, match="unknown layout 'NWHC'"):
        pool_activation(_randn(2, 3, 4, 4), "NWHC")
    with pytest.raises(ValueError, match="unknown tokens"):
        pool_activation(_randn(2, 3, 4), "NLC", tokens="class")
    with pytest.raises(ValueError, match="unknown pool"):
        pool_activation(_randn(2, 3, 4), "NLC", pool="median")
