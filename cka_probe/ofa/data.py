"""Training and validation sets for distillation runs: ImageNet (ImageFolder), CIFAR-100, Fashion-MNIST.

Transforms come from timm's ``create_transform``: for training, random-resized crop, flip, colour
jitter (off when RandAugment is on, timm's rule), RandAugment (``auto_augment``), random erasing;
for evaluation, resize and centre crop, with the settings :func:`eval_transform_settings` resolves
(the run records them). Mixup / cutmix are applied per batch by the trainer (timm's ``Mixup``).
Nothing is downloaded.

Fashion-MNIST is read from the gzipped IDX files (as the Debian package ``dataset-fashion-mnist``
installs them) by :func:`cka_probe.data.read_fashion_mnist` (torchvision's IDX reader); its 28 x 28
grey images become 3-channel RGB so that ImageNet-style models take them unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from PIL import Image
from torch.utils.data import Dataset, Subset

from ..data import DEBIAN_FASHION_MNIST, FASHION_MNIST_CLASSES, read_fashion_mnist
from ..errors import DataNotFoundError
from ..models._registry import resolve_name
from ..models._run import DATASET_STATS, EVAL_KEYS, eval_data_config, student_eval_options
from .config import TrainConfig

__all__ = [
    "DATASET_CLASSES",
    "DATASET_STATS",
    "FASHION_MNIST_DIR",
    "FashionMNIST",
    "build_dataset",
    "build_datasets",
    "build_transforms",
    "eval_transform_settings",
    "fixed_subset",
    "student_eval_options",
]

FASHION_MNIST_DIR = str(DEBIAN_FASHION_MNIST)
"""Where the Debian package ``dataset-fashion-mnist`` installs the IDX files."""

DATASET_CLASSES = {"imagenet": 1000, "cifar100": 100, "fashion_mnist": 10}


class FashionMNIST(Dataset):
    """Fashion-MNIST from its IDX files (gzipped or not), as 3-channel PIL images.

    The files are read by :func:`cka_probe.data.read_fashion_mnist` (torchvision's IDX reader).

    Args:
        root: folder holding ``train-images-idx3-ubyte[.gz]`` and the three other files.
        train: the 60,000 training images, else the 10,000 test images.
        transform: applied to each PIL image.
    """

    classes = FASHION_MNIST_CLASSES

    def __init__(self, root: str | Path, train: bool = True, transform: Callable | None = None) -> None:
        images, labels = read_fashion_mnist(root, split="train" if train else "test")
        self.images = images
        self.targets = torch.from_numpy(labels).long()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple:
        image = Image.fromarray(self.images[index]).convert("RGB")  # uint8 (28, 28) -> "L"
        if self.transform is not None:
            image = self.transform(image)
        return image, int(self.targets[index])


def build_transforms(config: TrainConfig) -> tuple[Callable, Callable]:
    """timm's training and evaluation transforms for ``config`` (Table 8's augmentations).

    Random erasing is left out of the per-image transform when ``erase_after_mixup`` is set (the trainer
    then erases the mixed batch). The evaluation transform is made from the run's evaluation data config
    (:func:`cka_probe.models.eval_data_config`, which :func:`eval_transform_settings` records); its mean and
    std normalise the training images too.
    """
    from timm.data import create_transform

    data_config = eval_data_config(**{key: getattr(config, key) for key in EVAL_KEYS})
    train_transform = create_transform(
        input_size=config.img_size,
        is_training=True,
        scale=tuple(config.crop_scale),
        hflip=config.hflip,
        color_jitter=config.color_jitter,
        auto_augment=config.rand_augment,
        interpolation=config.train_interpolation or config.interpolation,
        mean=data_config["mean"],
        std=data_config["std"],
        re_prob=0.0 if config.erase_after_mixup else config.reprob,
        re_mode="pixel",
        re_count=1,
    )
    eval_transform = create_transform(is_training=False, **data_config)
    return train_transform, eval_transform


def eval_transform_settings(config: TrainConfig) -> dict:
    """What the run's evaluation transform is made of, as plain (JSON-able) values, for the run to record:
    ``eval_preprocessing``, where the crop and interpolation come from (``source``), and the data config
    itself (input size, crop fraction, crop mode, interpolation, mean, std).

    ``source`` names the timm version whose pretrained config decided the crop (``student``: the installed
    timm's; ``official``: timm 0.6.5's, as the official OFA-KD runs resolved it), or the recipe.

    Example:
        >>> from cka_probe.ofa.config import load_config
        >>> settings = eval_transform_settings(load_config(None, ["eval_preprocessing=official"]))
        >>> settings["source"], settings["crop_pct"], settings["interpolation"]
        ('timm 0.6.5 data config of resnet18, as the official OFA-KD runs', 0.875, 'bilinear')
    """
    import timm

    data_config = eval_data_config(**{key: getattr(config, key) for key in EVAL_KEYS})
    source = "recipe (crop_pct, interpolation)"
    if config.eval_preprocessing != "recipe":  # the student's name matters (and was resolved) only here
        name = resolve_name(config.student).timm_name
        source = {
            "official": f"timm 0.6.5 data config of {name.split('.')[0]}, as the official OFA-KD runs",
            "student": f"timm {timm.__version__} pretrained config of {name}",
        }[config.eval_preprocessing]
    plain = {key: list(value) if isinstance(value, tuple) else value for key, value in data_config.items()}
    return {"eval_preprocessing": config.eval_preprocessing, "source": source, **plain}


def build_datasets(config: TrainConfig) -> tuple[Dataset, Dataset]:
    """The training and validation sets of ``config``, with timm transforms and optional fixed subsets."""
    train_transform, eval_transform = build_transforms(config)
    return (
        build_dataset(config, train=True, transform=train_transform),
        build_dataset(config, train=False, transform=eval_transform),
    )


def build_dataset(config: TrainConfig, train: bool, transform: Callable | None = None) -> Dataset:
    """One split of ``config``'s data set (``train_samples`` / ``val_samples`` applied); ``transform`` defaults
    to the split's transform of :func:`build_transforms`."""
    if transform is None:
        transform = build_transforms(config)[0 if train else 1]
    if config.dataset == "fashion_mnist":
        root = Path(config.data_dir or FASHION_MNIST_DIR)
        _require_dir(root, "Fashion-MNIST")
        dataset = FashionMNIST(root, train=train, transform=transform)
    elif config.dataset == "cifar100":
        from torchvision.datasets import CIFAR100

        root = _require_data_dir(config, "CIFAR-100")
        try:
            dataset = CIFAR100(str(root), train=train, transform=transform, download=False)
        except RuntimeError as exc:
            raise DataNotFoundError(
                f"no CIFAR-100 under {root} ({exc}); point data_dir at the folder holding cifar-100-python/"
            ) from None
    else:
        from torchvision.datasets import ImageFolder

        root = _require_data_dir(config, "ImageNet")
        split = "train" if train else "val"
        _require_dir(root / split, f"ImageNet {split} split")
        dataset = ImageFolder(str(root / split), transform=transform)
    samples = config.train_samples if train else config.val_samples
    return fixed_subset(dataset, samples) if samples is not None else dataset


def fixed_subset(dataset: Dataset, size: int, seed: int = 0) -> Dataset:
    """A subset of ``size`` examples drawn with a fixed seed, the same whatever the run's seed.

    Keeping the data fixed across training seeds makes the spread over seeds measure training noise only.
    """
    if size >= len(dataset):
        return dataset
    generator = torch.Generator().manual_seed(seed)
    indices = torch.randperm(len(dataset), generator=generator)[:size].sort().values.tolist()
    return Subset(dataset, indices)


def _require_data_dir(config: TrainConfig, what: str) -> Path:
    if not config.data_dir:
        raise DataNotFoundError(f"{what} needs data_dir: set data_dir=<folder> in the config or with --set")
    root = Path(config.data_dir)
    _require_dir(root, what)
    return root


def _require_dir(path: Path, what: str) -> None:
    if not path.is_dir():
        raise DataNotFoundError(f"{what} data path {path} does not exist; set data_dir to an existing folder")
