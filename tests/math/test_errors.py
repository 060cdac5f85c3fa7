"""Every one-line error of the math layer that the estimator tests do not already reach."""

from __future__ import annotations

import pytest
import torch

from cka_probe import LabeledMatrix, MinibatchCKA, hsic_biased, hsic_unbiased, rbf_cka
from cka_probe.errors import ArgumentError, KernelError, ShapeError


def test_labeled_matrix_names_must_fit_the_values():
    with pytest.raises(ShapeError, match=r"shape \(2, 2\) does not fit 1 row and 2 column names"):
        LabeledMatrix(torch.zeros(2, 2), ("a",), ("b", "c"))


def test_hsic_needs_square_matching_kernels_and_enough_examples():
    with pytest.raises(ShapeError, match="square and of one shape"):
        hsic_biased(torch.eye(4), torch.eye(5))
    with pytest.raises(ShapeError, match="at least 4 examples, got n=3"):
        hsic_unbiased(torch.eye(3), torch.eye(3))


def test_rbf_bandwidth_must_be_positive():
    x = torch.randn(6, 2)
    with pytest.raises(KernelError, match="bandwidth fraction must be > 0"):
        rbf_cka(x, x, sigma_frac=0.0)


def test_minibatch_accumulator_errors():
    metric = MinibatchCKA()
    with pytest.raises(ShapeError, match="no statistics yet"):
        metric.statistics()
    with pytest.raises(ArgumentError, match="init_process_group"):
        metric.update([torch.randn(8, 2)])
        metric.sync()
    other = MinibatchCKA()
    other.update({"x": torch.randn(8, 2)}, {"y": torch.randn(8, 3)})
    named = MinibatchCKA()
    named.update({"a": torch.randn(8, 2)}, {"b": torch.randn(8, 3)})
    with pytest.raises(ShapeError, match="different layers"):
        named.merge(other)
    with pytest.raises(KernelError, match="unknown kernel"):
        MinibatchCKA(kernel="poly")
