"""Shared fixtures for the capture tests: an independent record of raw layer outputs."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture
def raw_outputs():
    """``raw_outputs(model, names)`` -> dict name -> list of cloned outputs, one per call.

    Plain forward hooks, independent of the recorder; removed after the test.
    """
    handles = []

    def attach(model: torch.nn.Module, names) -> dict[str, list[torch.Tensor]]:
        outputs: dict[str, list[torch.Tensor]] = {name: [] for name in names}
        for name in names:
            module = model.get_submodule(name)
            handles.append(
                module.register_forward_hook(
                    lambda mod, args, out, name=name: outputs[name].append(out.detach().clone())
                )
            )
        return outputs

    yield attach
    for handle in handles:
        handle.remove()


def pool_by_hand(x: torch.Tensor, layout: str, prefix: int = 0) -> torch.Tensor:
    """Reference pooling in float64, written independently of the package."""
    x = x.to(torch.float64)
    if layout == "NC":
        return x
    if layout == "NCHW":
        return x.flatten(2).mean(-1)
    if layout == "NHWC":
        return x.flatten(1, 2).mean(1)
    if layout == "NCL":
        return x.mean(-1)
    if layout == "NLC":
        return x[:, prefix:].mean(1)
    raise AssertionError(f"no hand pooling for {layout}")


@pytest.fixture
def hand_pool():
    return pool_by_hand
