"""Streaming (minibatch) CKA of Nguyen, Raghu and Kornblith (2021).

"Do Wide and Deep Networks Learn the Same Things?" ICLR 2021, Section 3.1: with k minibatches
``X_i``, ``Y_i`` of the same examples,

    CKA_minibatch = mean_i HSIC_1(K_i, L_i) / sqrt(mean_i HSIC_1(K_i, K_i) * mean_i HSIC_1(L_i, L_i))

where ``HSIC_1`` is the unbiased estimator of Song et al. (2012). Its value does not depend on the
batch order and converges to the population CKA; it is not the full-batch CKA of all images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

from ..errors import ArgumentError, ShapeError
from .checks import _check_examples, _check_kernel, _layer_list, _warn_constant, _warn_degenerate, constant_layers
from .engine import LabeledMatrix, _stack_pair
from .kernels import Gram, check_sigma_frac

__all__ = ["MinibatchCKA"]


class MinibatchCKA:
    """Accumulates unbiased HSIC statistics over minibatches; :meth:`compute` gives the CKA matrix.

    The state is float64 sums and a batch count: ``hsic_ab`` (L_a, L_b), ``hsic_aa`` (L_a,),
    ``hsic_bb`` (L_b,), and ``spread_a`` (2, L_a), ``spread_b`` (2, L_b), the sums over batches of
    each layer's within-batch ``V = ||X_c||_F^2`` and ``S = ||X||_F^2`` for the constant-layer test
    that every estimator shares (:func:`~cka_probe.math.checks.constant_layers`: a layer constant in
    every batch is NaN). They add across batches and across processes (:meth:`merge`,
    :meth:`sync`). Each update holds the U-centred Grams of one batch, O(L n^2) memory, whatever
    the number of images seen; a layer may arrive as its per-batch :class:`Gram` (``(b, b)``, e.g.
    of the flattened activation) instead of its features.

    Args:
        kernel: ``"linear"`` or ``"rbf"`` (RBF bandwidth from each batch's median distance).
        sigma_frac: RBF bandwidth fraction.

    Example:
        >>> import torch
        >>> g = torch.Generator().manual_seed(0)
        >>> x = torch.randn(64, 16, generator=g)
        >>> metric = MinibatchCKA()
        >>> for batch in x.split(16):
        ...     metric.update({"a": batch}, {"b": 2 * batch})
        >>> round(metric.compute()["a", "b"], 9)
        1.0
    """

    def __init__(self, kernel: str = "linear", sigma_frac: float = 1.0) -> None:
        _check_kernel(kernel)
        check_sigma_frac(sigma_frac)
        self.kernel = kernel
        self.sigma_frac = sigma_frac
        self.reset()

    def reset(self) -> None:
        """Forget every batch seen."""
        self.hsic_ab: torch.Tensor | None = None
        self.hsic_aa: torch.Tensor | None = None
        self.hsic_bb: torch.Tensor | None = None
        self.spread_a: torch.Tensor | None = None
        self.spread_b: torch.Tensor | None = None
        self.num_batches = 0
        self.num_examples = 0
        self.rows: tuple[str, ...] | None = None
        self.cols: tuple[str, ...] | None = None
        self._named = False
        self._self_compare: bool | None = None

    @torch.no_grad()
    def update(
        self,
        feats_a: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram],
        feats_b: Sequence[torch.Tensor | Gram] | Mapping[str, torch.Tensor | Gram] | None = None,
    ) -> None:
        """Add one minibatch: the layers of both models on the same ``n >= 4`` examples.

        Args:
            feats_a: ``(n, d_i)`` tensors or ``(n, n)`` :class:`Gram` of the first model's layers on
                this batch (sequence or name -> layer mapping).
            feats_b: the second model's; ``None`` to compare the first model with itself.
        """
        self_compare = feats_b is None
        if self._self_compare is not None and self_compare != self._self_compare:
            raise ShapeError("mixing self-comparison updates (feats_b=None) with two-model updates; reset() first")
        names_a, tensors_a = _layer_list(feats_a, "feats_a")
        names_b, tensors_b = (names_a, tensors_a) if self_compare else _layer_list(feats_b, "feats_b")
        n = _check_examples(tensors_a, names_a, tensors_b, names_b, unbiased=True)
        self._check_names(names_a, names_b, named=isinstance(feats_a, Mapping))
        device = tensors_a[0].device

        side_b = None if self_compare else ([t.to(device) for t in tensors_b], names_b)
        stack_a, stack_b = _stack_pair((tensors_a, names_a), side_b, self.kernel, True, self.sigma_frac, torch.float64)
        scale = float(n * (n - 3))
        hsic_ab = stack_a.products(stack_b) / scale
        hsic_aa = stack_a.squared_norms / scale
        hsic_bb = hsic_aa if self_compare else stack_b.squared_norms / scale
        spread_a = torch.stack([stack_a.variance, stack_a.scale])
        spread_b = spread_a if self_compare else torch.stack([stack_b.variance, stack_b.scale])
        if self.hsic_ab is None:
            self.hsic_ab, self.hsic_aa, self.hsic_bb = hsic_ab, hsic_aa, hsic_bb
            self.spread_a, self.spread_b = spread_a, spread_b
        else:
            self.hsic_ab = self.hsic_ab + hsic_ab.to(self.hsic_ab.device)
            self.hsic_aa = self.hsic_aa + hsic_aa.to(self.hsic_aa.device)
            self.hsic_bb = self.hsic_bb + hsic_bb.to(self.hsic_bb.device)
            self.spread_a = self.spread_a + spread_a.to(self.spread_a.device)
            self.spread_b = self.spread_b + spread_b.to(self.spread_b.device)
        self.num_batches += 1
        self.num_examples += n
        self._self_compare = self_compare

    def compute(self) -> torch.Tensor | LabeledMatrix:
        """The minibatch CKA matrix ``(L_a, L_b)``; NaN (with a warning) for layers constant in every batch."""
        if self.hsic_ab is None:
            raise ShapeError("MinibatchCKA.compute() called before any update(); feed at least one batch")
        norms_a, constant_a, degenerate_a = self._norms(self.hsic_aa, self.spread_a)
        norms_b, constant_b, degenerate_b = self._norms(self.hsic_bb, self.spread_b)
        rows = self.rows or tuple(f"feats_a[{i}]" for i in range(len(norms_a)))
        cols = self.cols or tuple(f"feats_b[{j}]" for j in range(len(norms_b)))

        def named(mask_a, mask_b):
            return [rows[i] for i in torch.nonzero(mask_a).flatten().tolist()] + [
                cols[j] for j in torch.nonzero(mask_b).flatten().tolist()
            ]

        _warn_constant(named(constant_a, constant_b))
        _warn_degenerate(named(degenerate_a, degenerate_b))
        values = self.hsic_ab / (norms_a[:, None] * norms_b[None, :])
        if self._named:
            return LabeledMatrix(values, self.rows, self.cols)
        return values

    @staticmethod
    def _norms(hsic: torch.Tensor, spread: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``sqrt(HSIC(K, K))`` per layer, NaN where the layer is constant (the shared test) or its
        summed HSIC vanishes; with the masks of both cases."""
        constant = constant_layers(spread[0], spread[1])
        degenerate = ~constant & ~(hsic > 0)
        return torch.where(constant | degenerate, torch.nan, hsic.clamp_min(0).sqrt()), constant, degenerate

    def statistics(self) -> dict[str, torch.Tensor]:
        """The sufficient statistics, as tensors that add across processes."""
        if self.hsic_ab is None:
            raise ShapeError("no statistics yet; call update() first")
        return {  # copies, so that in-place reductions never alias one another
            "hsic_ab": self.hsic_ab.clone(),
            "hsic_aa": self.hsic_aa.clone(),
            "hsic_bb": self.hsic_bb.clone(),
            "spread_a": self.spread_a.clone(),
            "spread_b": self.spread_b.clone(),
            "counts": torch.tensor(
                [self.num_batches, self.num_examples], dtype=torch.float64, device=self.hsic_ab.device
            ),
        }

    def merge(self, other: MinibatchCKA) -> MinibatchCKA:
        """Add another accumulator's statistics (same layers) into this one; returns ``self``."""
        if other.hsic_ab is None:
            return self
        if self.hsic_ab is None:
            self.rows, self.cols, self._named, self._self_compare = (
                other.rows,
                other.cols,
                other._named,
                other._self_compare,
            )
            self.hsic_ab, self.hsic_aa, self.hsic_bb = (
                other.hsic_ab.clone(),
                other.hsic_aa.clone(),
                other.hsic_bb.clone(),
            )
            self.spread_a, self.spread_b = other.spread_a.clone(), other.spread_b.clone()
        else:
            if (other.rows, other.cols) != (self.rows, self.cols) or other.hsic_ab.shape != self.hsic_ab.shape:
                raise ShapeError("cannot merge accumulators over different layers; compare the same models and layers")
            self.hsic_ab = self.hsic_ab + other.hsic_ab.to(self.hsic_ab.device)
            self.hsic_aa = self.hsic_aa + other.hsic_aa.to(self.hsic_aa.device)
            self.hsic_bb = self.hsic_bb + other.hsic_bb.to(self.hsic_bb.device)
            self.spread_a = self.spread_a + other.spread_a.to(self.spread_a.device)
            self.spread_b = self.spread_b + other.spread_b.to(self.spread_b.device)
        self.num_batches += other.num_batches
        self.num_examples += other.num_examples
        return self

    def sync(self, group=None) -> None:
        """Sum the statistics over the processes of a ``torch.distributed`` group, in place."""
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ArgumentError("torch.distributed is not initialised; call init_process_group() before sync()")
        stats = self.statistics()
        for key in ("hsic_ab", "hsic_aa", "hsic_bb", "spread_a", "spread_b", "counts"):
            dist.all_reduce(stats[key], group=group)
        self.hsic_ab, self.hsic_aa, self.hsic_bb = stats["hsic_ab"], stats["hsic_aa"], stats["hsic_bb"]
        self.spread_a, self.spread_b = stats["spread_a"], stats["spread_b"]
        self.num_batches, self.num_examples = (int(v) for v in stats["counts"].tolist())

    def _check_names(self, names_a: list[str], names_b: list[str], named: bool) -> None:
        if self.rows is None:
            self.rows, self.cols, self._named = tuple(names_a), tuple(names_b), named
            return
        if tuple(names_a) != self.rows or tuple(names_b) != self.cols:
            raise ShapeError(
                f"this batch has layers {len(names_a)} x {len(names_b)} that differ from the first batch's "
                f"{len(self.rows)} x {len(self.cols)}; every batch must carry the same layers in the same order"
            )
