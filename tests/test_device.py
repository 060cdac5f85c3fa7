"""One device rule (cka_probe._device) for analysis and training: bad strings are one-line errors naming --device."""

from __future__ import annotations

import pytest
import torch

from cka_probe._device import resolve_device
from cka_probe.errors import DeviceError


def test_cpu_and_auto():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")


@pytest.mark.parametrize("bad", ["gpu", "cuda:x", "", "cpu:0:1"])
def test_unknown_strings_name_the_option(bad):
    with pytest.raises(DeviceError, match=r"unknown device .*--device auto, cpu, mps, cuda or cuda:N") as info:
        resolve_device(bad)
    assert "\n" not in str(info.value)


def test_missing_cuda_device_is_refused():
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    with pytest.raises(DeviceError, match="--device cuda"):
        resolve_device(f"cuda:{count}")


def test_analysis_and_training_share_the_rule():
    from cka_probe.engine import features
    from cka_probe.ofa import trainer

    assert features.resolve_device is resolve_device
    assert trainer.resolve_device is resolve_device
