"""Tiny models and data for the One-for-All tests: timm's ``test_*`` configs and small custom sizes."""

from __future__ import annotations

import pytest
import timm
import torch
from torch.utils.data import TensorDataset

IMG = 32


@pytest.fixture(autouse=True)
def _single_thread(one_thread):
    """Every distillation test runs on one intra-op thread (see the root conftest's ``one_thread``)."""


def make_model(kind: str, num_classes: int = 10, img_size: int = IMG, **kwargs) -> torch.nn.Module:
    """A randomly initialised tiny model of one architecture family."""
    torch.manual_seed(kwargs.pop("seed", 0))
    if kind == "resnet":
        return timm.create_model("test_resnet", num_classes=num_classes, **kwargs)
    if kind == "convnext":
        return timm.create_model("test_convnext", num_classes=num_classes, **kwargs)
    if kind == "efficientnet":
        return timm.create_model("test_efficientnet", num_classes=num_classes, **kwargs)
    if kind == "vit":
        return timm.create_model(
            "vit_tiny_patch16_224",
            num_classes=num_classes,
            img_size=img_size,
            patch_size=4,
            depth=4,
            embed_dim=32,
            num_heads=2,
            **kwargs,
        )
    if kind == "test_vit":
        return timm.create_model("test_vit", num_classes=num_classes, img_size=img_size, **kwargs)
    if kind == "mixer":
        from timm.models.mlp_mixer import MlpMixer

        return MlpMixer(num_classes=num_classes, img_size=img_size, patch_size=4, num_blocks=4, embed_dim=32, **kwargs)
    if kind == "swin":
        return timm.create_model(
            "swin_tiny_patch4_window7_224",
            num_classes=num_classes,
            img_size=img_size,
            window_size=2,
            embed_dim=8,
            depths=(1, 1, 1, 1),
            num_heads=(1, 1, 1, 1),
            **kwargs,
        )
    raise ValueError(kind)


@pytest.fixture
def model_factory():
    return make_model


@pytest.fixture
def images():
    return torch.randn(4, 3, IMG, IMG, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def labels():
    return torch.tensor([0, 3, 7, 9])


def tiny_datasets(n_train: int = 32, n_val: int = 16, img_size: int = 16, num_classes: int = 10):
    """Fixed random tensors standing in for transformed images."""
    generator = torch.Generator().manual_seed(123)
    x_train = torch.randn(n_train, 3, img_size, img_size, generator=generator)
    y_train = torch.randint(0, num_classes, (n_train,), generator=generator)
    x_val = torch.randn(n_val, 3, img_size, img_size, generator=generator)
    y_val = torch.randint(0, num_classes, (n_val,), generator=generator)
    return TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)


@pytest.fixture
def make_datasets():
    return tiny_datasets
