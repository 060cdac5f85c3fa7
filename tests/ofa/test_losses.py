"""OFA, KD and hint losses against float64 NumPy references computed from the formulas."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cka_probe.errors import ShapeError
from cka_probe.ofa.losses import hint_loss, kd_loss, ofa_loss, target_mask


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _ofa_reference(z_s, z_t, y, gamma, temperature):
    """-mean_b sum_c [(p_t + y)^gamma - y] log p_s, all in float64, written out loop by loop."""
    p_s, p_t = _softmax(z_s / temperature), _softmax(z_t / temperature)
    total = 0.0
    for b in range(z_s.shape[0]):
        for c in range(z_s.shape[1]):
            onehot = 1.0 if c == y[b] else 0.0
            total += -((p_t[b, c] + onehot) ** gamma - onehot) * np.log(p_s[b, c])
    return total / z_s.shape[0]


@pytest.fixture
def logits():
    generator = torch.Generator().manual_seed(0)
    return torch.randn(5, 7, generator=generator) * 3, torch.randn(5, 7, generator=generator) * 3


@pytest.mark.parametrize("gamma", [1.0, 1.3, 2.0])
@pytest.mark.parametrize("temperature", [1.0, 4.0])
def test_ofa_matches_hand_computed_reference(logits, gamma, temperature):
    z_s, z_t = logits
    y = torch.tensor([0, 6, 3, 3, 1])
    expected = _ofa_reference(z_s.double().numpy(), z_t.double().numpy(), y.numpy(), gamma, temperature)
    got = ofa_loss(z_s, z_t, y, gamma=gamma, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_ofa_small_case_by_hand():
    # p_s = (1/2, 1/2); p_t = (1/2, 1/2); y = class 0; gamma = 2:
    # weights: (1/2 + 1)^2 - 1 = 1.25 and (1/2)^2 = 0.25; loss = -(1.25 + 0.25) log(1/2) = 1.5 log 2
    got = ofa_loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.tensor([0]), gamma=2.0)
    assert got.item() == pytest.approx(1.5 * np.log(2.0), rel=1e-6)


def test_gamma_one_is_soft_cross_entropy_against_teacher(logits):
    z_s, z_t = logits
    y = torch.tensor([2, 2, 0, 5, 6])
    soft_ce = -(F.softmax(z_t, dim=1) * F.log_softmax(z_s, dim=1)).sum(dim=1).mean()
    assert torch.allclose(ofa_loss(z_s, z_t, y, gamma=1.0), soft_ce, atol=1e-6)
    # and it does not depend on the target at all
    assert torch.allclose(
        ofa_loss(z_s, z_t, torch.zeros(5, dtype=torch.long), gamma=1.0),
        soft_ce,
        atol=1e-6,
    )


@pytest.mark.parametrize("temperature", [1.0, 2.0])
def test_gamma_above_one_enhances_only_the_target_class(logits, temperature):
    # The loss -1/B sum_b sum_c w_bc log p_s,bc with w = (p_t + y)^gamma - y has, per sample, the gradient
    # dL/dz_s,k = (sum_c w_c * p_s,k - w_k) / (B T). Reference: that gradient in float64 NumPy from the formula;
    # the code's gradient comes from autograd through ofa_loss.
    z_s, z_t = logits
    y = np.array([1, 2, 3, 4, 5])
    gamma = 1.5
    p_s, p_t = (
        _softmax(z_s.double().numpy() / temperature),
        _softmax(z_t.double().numpy() / temperature),
    )
    onehot = np.eye(7)[y]
    weight = (p_t + onehot) ** gamma - onehot
    expected = (weight.sum(axis=1, keepdims=True) * p_s - weight) / (len(y) * temperature)
    student = z_s.double().clone().requires_grad_(True)
    ofa_loss(student, z_t.double(), torch.from_numpy(y), gamma=gamma, temperature=temperature).backward()
    np.testing.assert_allclose(student.grad.numpy(), expected, rtol=1e-4, atol=1e-6)  # the loss runs in float32
    # what "enhances the target" means: its weight exceeds p_t, every other weight p_t**gamma is below p_t
    assert np.all(weight[onehot == 1] > p_t[onehot == 1])
    assert np.all(weight[onehot == 0] < p_t[onehot == 0])


def test_soft_targets_use_their_argmax(logits):
    z_s, z_t = logits
    y = torch.tensor([4, 0, 1, 6, 2])
    soft = 0.7 * F.one_hot(y, 7).float() + 0.3 / 7
    assert torch.allclose(ofa_loss(z_s, z_t, soft, gamma=1.7), ofa_loss(z_s, z_t, y, gamma=1.7))
    assert torch.equal(target_mask(soft, 7), F.one_hot(y, 7).float())


def test_ofa_is_stable_for_extreme_logits():
    # log_softmax, not log(softmax): a huge gap gives a finite loss, not inf
    z_s = torch.tensor([[1000.0, -1000.0]])
    z_t = torch.tensor([[-1000.0, 1000.0]])
    loss = ofa_loss(z_s, z_t, torch.tensor([1]), gamma=1.2)
    assert torch.isfinite(loss)
    assert loss.item() == pytest.approx(2000.0 * ((1.0 + 1.0) ** 1.2 - 1.0), rel=1e-5)


def test_gradient_reaches_the_student_only():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(6, 4), torch.nn.Linear(6, 4)
    x, y = torch.randn(3, 6), torch.tensor([0, 1, 3])
    for loss in (
        ofa_loss(student(x), teacher(x), y, gamma=1.5, temperature=2.0),
        kd_loss(student(x), teacher(x), temperature=3.0),
        hint_loss(student(x), teacher(x)),
    ):
        loss.backward()
    assert student.weight.grad is not None and student.weight.grad.abs().sum() > 0
    assert teacher.weight.grad is None and teacher.bias.grad is None


@pytest.mark.parametrize("temperature", [1.0, 2.0, 4.0])
def test_kd_matches_reference_with_t_squared(logits, temperature):
    z_s, z_t = (t.double().numpy() for t in logits)
    p_s, p_t = _softmax(z_s / temperature), _softmax(z_t / temperature)
    expected = (p_t * (np.log(p_t) - np.log(p_s))).sum(axis=1).mean() * temperature**2
    got = kd_loss(*logits, temperature=temperature)
    assert got.item() == pytest.approx(expected, rel=1e-5)


def test_kd_is_zero_for_identical_logits(logits):
    assert kd_loss(logits[0], logits[0].clone()).item() == pytest.approx(0.0, abs=1e-6)


def test_hint_loss_is_mse():
    a, b = torch.arange(6.0).view(2, 3), torch.ones(2, 3)
    assert hint_loss(a, b).item() == pytest.approx(((np.arange(6.0) - 1) ** 2).mean())


def test_shape_errors_are_one_line():
    with pytest.raises(ShapeError, match="student logits .* teacher logits"):
        ofa_loss(torch.zeros(2, 3), torch.zeros(2, 4), torch.tensor([0, 1]))
    with pytest.raises(ShapeError, match="do not match"):
        hint_loss(torch.zeros(2, 3), torch.zeros(2, 4))
    with pytest.raises(ShapeError, match="soft targets"):
        target_mask(torch.zeros(2, 5), 3)


@pytest.mark.parametrize("temperature", [0.0, -1.0])
def test_temperature_must_be_positive(temperature):
    from cka_probe.errors import ArgumentError

    z = torch.zeros(2, 3)
    message = rf"temperature must be positive, got {temperature} \(recipe keys kd_temperature, ofa_temperature\)"
    with pytest.raises(ArgumentError, match=message):
        kd_loss(z, z, temperature)
    with pytest.raises(ArgumentError, match=message):
        ofa_loss(z, z, torch.tensor([0, 1]), 1.0, temperature)
