"""Data: Fashion-MNIST from IDX files, timm transforms, and Table 8's recipes wired to timm's factories."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from timm.data import Mixup
from timm.data.random_erasing import RandomErasing
from timm.loss import SoftTargetCrossEntropy
from timm.scheduler import CosineLRScheduler, MultiStepLRScheduler

from cka_probe.ofa.config import load_config
from cka_probe.ofa.data import FASHION_MNIST_DIR, FashionMNIST, build_datasets, build_transforms
from cka_probe.ofa.trainer import Trainer

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ofa"


def _write_idx(path: Path, array: np.ndarray) -> None:
    code = 0x08  # unsigned byte
    header = struct.pack(">HBB", 0, code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def fake_fashion_mnist(tmp_path):
    """A gzipped IDX set of 40 training and 20 test images, laid out like the Debian package."""
    rng = np.random.default_rng(0)
    for prefix, n in (("train", 40), ("t10k", 20)):
        _write_idx(tmp_path / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return tmp_path


def test_fashion_mnist_reads_gzipped_idx_as_rgb(fake_fashion_mnist):
    data = FashionMNIST(fake_fashion_mnist, train=False)
    assert len(data) == 20
    image, label = data[13]
    assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (28, 28)
    assert label == 3
    channels = np.asarray(image)
    assert np.array_equal(channels[..., 0], channels[..., 2])  # grey copied to three channels


@pytest.mark.skipif(not Path(FASHION_MNIST_DIR).is_dir(), reason="dataset-fashion-mnist not installed")
def test_real_fashion_mnist_test_split():
    data = FashionMNIST(FASHION_MNIST_DIR, train=False)
    assert len(data) == 10_000 and set(data.targets.tolist()) == set(range(10))


def test_build_datasets_with_fixed_subsets(fake_fashion_mnist):
    config = load_config(None, {"dataset": "fashion_mnist", "data_dir": str(fake_fashion_mnist), "img_size": 16,
                                "train_samples": 12, "val_samples": 30})  # fmt: skip
    train_set, val_set = build_datasets(config)
    assert len(train_set) == 12 and len(val_set) == 20
    image, _ = train_set[0]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    again, _ = build_datasets(config)
    assert again.indices == train_set.indices  # the subset does not depend on the run's seed


def test_table8_augmentations_come_from_timm(tmp_path):
    config = load_config(CONFIGS / "cifar100_vit_mlp.yaml", {"img_size": 32})
    train_transform, eval_transform = build_transforms(config)
    names = [type(t).__name__ for t in train_transform.transforms]
    assert "RandAugment" in names
    erasing = [t for t in train_transform.transforms if isinstance(t, RandomErasing)]
    assert len(erasing) == 1 and erasing[0].probability == 0.25
    assert not any(isinstance(t, RandomErasing) for t in eval_transform.transforms)


@pytest.mark.parametrize(
    "recipe, optimizer, scheduler, ema, mixup",
    [
        ("imagenet_cnn", "SGD", MultiStepLRScheduler, None, False),
        ("imagenet_vit_mlp", "AdamW", CosineLRScheduler, 0.99996, True),
        ("cifar100_cnn", "SGD", CosineLRScheduler, None, False),
        ("cifar100_vit_mlp", "AdamW", CosineLRScheduler, None, True),
    ],
)
def test_recipes_build_timm_optimizer_scheduler_ema_and_mixup(
    tmp_path, make_datasets, recipe, optimizer, scheduler, ema, mixup
):
    tiny = {"method": "scratch", "student": "test_resnet", "img_size": 16, "num_classes": 10, "batch_size": 8,
            "output_dir": str(tmp_path), "device": "cpu", "workers": 0}  # fmt: skip
    config = load_config(CONFIGS / f"{recipe}.yaml", tiny)
    trainer = Trainer(config, datasets=make_datasets())
    assert type(trainer.optimizer).__name__ == optimizer
    group = trainer.optimizer.param_groups[0]
    assert group["initial_lr"] == config.lr
    assert {g["weight_decay"] for g in trainer.optimizer.param_groups} == {0.0, config.weight_decay}
    if optimizer == "SGD":
        assert group["momentum"] == 0.9 and group["nesterov"] is True  # timm "sgd", as the reference
    assert isinstance(trainer.scheduler, scheduler)
    assert trainer.scheduler.warmup_t == config.warmup_epochs
    if scheduler is MultiStepLRScheduler:
        assert trainer.scheduler.decay_t == [30, 60, 90] and trainer.scheduler.decay_rate == 0.1
    else:
        assert trainer.scheduler.lr_min == config.min_lr and trainer.scheduler.t_initial == config.epochs
    assert (trainer.ema.decay if trainer.ema else None) == ema
    assert isinstance(trainer.mixup, Mixup) is mixup
    if mixup:
        assert (trainer.mixup.mixup_alpha, trainer.mixup.cutmix_alpha) == (0.8, 1.0)
        assert isinstance(trainer.task.criterion, SoftTargetCrossEntropy)


def test_cifar100_folder_without_the_data_is_a_one_line_error(tmp_path):
    from cka_probe.errors import DataNotFoundError

    config = load_config(None, {"dataset": "cifar100", "num_classes": 100, "data_dir": str(tmp_path), "workers": 0})
    with pytest.raises(
        DataNotFoundError, match="no CIFAR-100 under .*point data_dir at the folder holding cifar-100-python"
    ):
        build_datasets(config)
