"""The official OFA-KD recipes (configs/ofa/official/): every listed difference from Table 8, the learning rate
at epoch boundaries against the official settings' formula, and the weight-decay groups."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import timm
import torch
from torchvision import transforms as T

from cka_probe.ofa.config import TrainConfig, load_config
from cka_probe.ofa.data import build_transforms, eval_transform_settings
from cka_probe.ofa.task import TrainableModules
from cka_probe.ofa.trainer import build_optimizer, build_scheduler

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "ofa"
RECIPES = ("imagenet_cnn", "imagenet_vit_mlp", "cifar100_cnn", "cifar100_vit_mlp")

# The differences of the official README commands from Table 8, as issue 11 lists them.
OFFICIAL = {
    "imagenet_cnn": {"ofa_gamma": 1.5, "warmup_lr": 1e-4, "sched": "step", "decay_epochs": 30.0, "amp": False},
    "imagenet_vit_mlp": {"ofa_gamma": 1.5, "rand_augment": "rand-m9-mstd0.5-inc1", "drop_path": 0.0, "amp": False,
                         "erase_after_mixup": True},
    "cifar100_cnn": {"warmup_lr": 1e-4, "amp": False},
    "cifar100_vit_mlp": {"rand_augment": "rand-m9-mstd0.5-inc1", "amp": False, "erase_after_mixup": True},
}  # fmt: skip
EVERY_RECIPE = {
    "train_interpolation": "random",
    "eval_preprocessing": "official",
    "weight_decay_exempt_embeddings": False,
}


@pytest.mark.parametrize("name", RECIPES)
def test_official_recipes_are_table_8_plus_the_listed_differences(name):
    table8 = load_config(CONFIGS / f"{name}.yaml").to_dict()
    official = load_config(CONFIGS / "official" / f"{name}.yaml").to_dict()
    expected = {**OFFICIAL[name], **EVERY_RECIPE}
    for key, value in expected.items():
        assert official[key] == value, key
    # everything else that Table 8 fixes is unchanged
    for key in ("epochs", "batch_size", "lr", "opt", "weight_decay", "warmup_epochs", "ema_decay", "mixup", "cutmix",
                "reprob", "student", "teacher", "dataset"):  # fmt: skip
        assert official[key] == table8[key], key


def _lr_by_epoch(config: TrainConfig) -> list[float]:
    """The learning rate of each epoch, from timm's scheduler stepped at epoch boundaries as the trainer does."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=config.lr)
    scheduler = build_scheduler(optimizer, config)
    rates = []
    for epoch in range(config.epochs):
        scheduler.step(epoch)
        rates.append(optimizer.param_groups[0]["lr"])
    return rates


def test_official_step_schedule_drops_at_epochs_30_60_90():
    config = load_config(CONFIGS / "official" / "imagenet_cnn.yaml")
    # official settings: warm-up 3 epochs linearly from 1e-4 to 0.1, then 0.1 x 0.1^floor(epoch / 30)
    expected = [1e-4 + e * (0.1 - 1e-4) / 3 if e < 3 else 0.1 * 0.1 ** (e // 30) for e in range(100)]
    got = _lr_by_epoch(config)
    assert got == pytest.approx(expected, rel=1e-12)
    assert got[29] == pytest.approx(0.1) and got[30] == pytest.approx(0.01)
    assert got[59] == pytest.approx(0.01) and got[60] == pytest.approx(0.001)
    assert got[89] == pytest.approx(0.001) and got[90] == pytest.approx(1e-4)


def test_table_8_recipe_keeps_timms_multistep_one_epoch_early():
    # documented difference: timm's MultiStepLRScheduler drops when epoch + 1 reaches a milestone
    got = _lr_by_epoch(load_config(CONFIGS / "imagenet_cnn.yaml"))
    assert got[28] == pytest.approx(0.1) and got[29] == pytest.approx(0.01)
    assert got[89] == pytest.approx(1e-4)


@pytest.mark.parametrize("name", ["imagenet_vit_mlp", "cifar100_vit_mlp", "cifar100_cnn"])
def test_official_cosine_schedules_at_epoch_boundaries(name):
    config = load_config(CONFIGS / "official" / f"{name}.yaml")
    base, low, start, warm, total = config.lr, config.min_lr, config.warmup_lr, config.warmup_epochs, config.epochs

    def official(e):  # linear warm-up, then half a cosine over all epochs (timm, warmup_prefix off, no cooldown)
        if e < warm:
            return start + e * (base - start) / warm
        return low + 0.5 * (base - low) * (1 + math.cos(math.pi * e / total))

    assert _lr_by_epoch(config) == pytest.approx([official(e) for e in range(total)], rel=1e-9)


def _groups(trainable, exempt: bool):
    config = load_config(None, {"weight_decay": 0.05, "weight_decay_exempt_embeddings": exempt, "opt": "adamw"})
    optimizer = build_optimizer(trainable, config)
    names = {id(p): n for n, p in trainable.named_parameters()}
    decayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] > 0 for p in g["params"]}
    undecayed = {names[id(p)] for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    return decayed, undecayed


@pytest.mark.parametrize(
    ("student", "embeddings"),
    [
        (
            lambda: timm.create_model(
                "vit_tiny_patch16_224", img_size=16, patch_size=4, depth=1, embed_dim=8, num_heads=1
            ),
            {"student.pos_embed", "student.cls_token"},
        ),
        (
            lambda: timm.create_model(
                "swin_tiny_patch4_window7_224", img_size=16, window_size=2, embed_dim=8, depths=(1, 1, 1, 1),
                num_heads=(1, 1, 1, 1),
            ),
            {f"student.layers.{i}.blocks.0.attn.relative_position_bias_table" for i in range(4)},
        ),
    ],
)  # fmt: skip
def test_weight_decay_groups_follow_the_official_code_unless_exempted(student, embeddings):
    trainable = TrainableModules(student())
    # reference: timm's rule written out — every parameter of two or more dimensions decays, 1-D ones never
    multi_dim = {n for n, p in trainable.named_parameters() if p.ndim > 1}
    one_dim = {n for n, p in trainable.named_parameters() if p.ndim <= 1}
    assert embeddings <= multi_dim
    decayed, undecayed = _groups(trainable, exempt=False)  # the official runs
    assert decayed == multi_dim and undecayed == one_dim
    decayed, undecayed = _groups(trainable, exempt=True)  # timm's rule for a bare model
    assert decayed == multi_dim - embeddings and undecayed == one_dim | embeddings


def test_official_transforms_random_train_interpolation_and_erasing_after_mixup():
    config = load_config(CONFIGS / "official" / "imagenet_vit_mlp.yaml")
    train, _ = build_transforms(config)
    crop = train.transforms[0]
    assert {str(m) for m in crop.interpolation} == {"InterpolationMode.BILINEAR", "InterpolationMode.BICUBIC"}
    assert not any(type(t).__name__ == "RandomErasing" for t in train.transforms)  # erased after mixup instead
    table8_train, table8_eval = build_transforms(load_config(CONFIGS / "imagenet_vit_mlp.yaml"))
    assert any(type(t).__name__ == "RandomErasing" for t in table8_train.transforms)
    assert next(t for t in table8_eval.transforms if isinstance(t, T.Resize)).size == math.floor(224 / 0.875)


# What timm 0.6.5 (the official runs' version) resolves for each student, measured with timm 0.6.5 itself:
# timm.data.resolve_data_config() on the model, with the official train.py's argument defaults.
# (crop_pct, interpolation, mean / std); input 224 x 224 for every one.
IMAGENET_STATS = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
TIMM_065 = {
    "resnet18": (0.875, "bilinear", IMAGENET_STATS),
    "mobilenetv2_100": (0.875, "bicubic", IMAGENET_STATS),
    "deit_tiny_patch16_224": (0.9, "bicubic", IMAGENET_STATS),
    "vit_small_patch16_224": (0.9, "bicubic", ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))),
    "swin_nano_patch4_window7_224": (0.9, "bicubic", IMAGENET_STATS),
    "swin_pico_patch4_window7_224": (0.9, "bicubic", IMAGENET_STATS),
    "resmlp_12_224": (0.875, "bicubic", IMAGENET_STATS),
}
CIFAR_STATS = ((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))  # official train.py's CIFAR-100 override


def _official_eval_reference(student: str, dataset: str) -> T.Compose:
    """The official runs' evaluation transform (timm 0.6.5's transforms_imagenet_eval), written with torchvision."""
    crop_pct, interpolation, stats = TIMM_065[student]
    mean, std = stats if dataset == "imagenet" else CIFAR_STATS
    return T.Compose(
        [
            T.Resize(math.floor(224 / crop_pct), interpolation=T.InterpolationMode(interpolation)),
            T.CenterCrop(224),
            T.ToTensor(),
            T.Normalize(mean, std),
        ]
    )


@pytest.mark.parametrize(
    ("name", "student"),
    [
        ("imagenet_cnn", None),  # resnet18
        ("imagenet_cnn", "mobilenetv2_100"),
        ("imagenet_vit_mlp", None),  # deit_tiny_patch16_224
        ("imagenet_vit_mlp", "vit_small_patch16_224"),
        ("imagenet_vit_mlp", "swin_nano_patch4_window7_224"),
        ("imagenet_vit_mlp", "resmlp_12_224"),
        ("cifar100_cnn", None),  # resnet18
        ("cifar100_cnn", "mobilenetv2_100"),
        ("cifar100_vit_mlp", None),  # swin_pico_patch4_window7_224
        ("cifar100_vit_mlp", "resmlp_12_224"),
    ],
)
def test_official_recipes_evaluate_as_the_official_runs(name, student):
    from PIL import Image

    config = load_config(CONFIGS / "official" / f"{name}.yaml", {"student": student} if student else {})
    _, evaluation = build_transforms(config)
    reference = _official_eval_reference(config.student, config.dataset)
    generator = torch.Generator().manual_seed(0)
    for size in ((32, 32), (300, 260)):  # a CIFAR image, upsampled as the official runs do, and a photo-sized one
        pixels = torch.randint(0, 256, (*size, 3), dtype=torch.uint8, generator=generator).numpy()
        image = Image.fromarray(pixels)
        torch.testing.assert_close(evaluation(image), reference(image), rtol=0, atol=1e-6)
    settings = eval_transform_settings(config)
    crop_pct, interpolation, _ = TIMM_065[config.student]
    assert (settings["crop_pct"], settings["interpolation"]) == (crop_pct, interpolation)
    assert settings["source"] == f"timm 0.6.5 data config of {config.student}, as the official OFA-KD runs"


def test_resnet18_official_eval_differs_from_timm_1s_pretrained_config():
    # issue 19: timm 1.0 resolves crop 0.95 bicubic for resnet18, the official runs used 0.875 bilinear (Resize 256)
    official = eval_transform_settings(load_config(CONFIGS / "official" / "imagenet_cnn.yaml"))
    current = eval_transform_settings(
        load_config(CONFIGS / "official" / "imagenet_cnn.yaml", ["eval_preprocessing=student"])
    )
    assert (official["crop_pct"], official["interpolation"]) == (0.875, "bilinear")
    assert (current["crop_pct"], current["interpolation"]) == (0.95, "bicubic")
    resize = next(
        t
        for t in build_transforms(load_config(CONFIGS / "official" / "imagenet_cnn.yaml"))[1].transforms
        if isinstance(t, T.Resize)
    )
    assert resize.size == 256 and resize.interpolation == T.InterpolationMode.BILINEAR


def test_official_eval_of_a_vit_student_normalises_training_images_with_its_mean_and_std_on_imagenet():
    # the official train.py builds both loaders from the student's data config: ViT-S's mean / std are 0.5
    config = load_config(CONFIGS / "official" / "imagenet_vit_mlp.yaml", ["student=vit_small_patch16_224"])
    train, _ = build_transforms(config)
    normalize = next(t for t in train.transforms if isinstance(t, T.Normalize))
    assert list(normalize.mean) == [0.5, 0.5, 0.5] and list(normalize.std) == [0.5, 0.5, 0.5]
    cifar = load_config(CONFIGS / "official" / "cifar100_vit_mlp.yaml", ["student=vit_small_patch16_224"])
    normalize = next(t for t in build_transforms(cifar)[0].transforms if isinstance(t, T.Normalize))
    assert tuple(normalize.mean) == pytest.approx(CIFAR_STATS[0])


def test_official_eval_refuses_a_student_the_official_code_never_had(tmp_path):
    from click.testing import CliRunner

    from cka_probe.cli.main import main
    from cka_probe.errors import ConfigError

    with pytest.raises(ConfigError, match="eval_preprocessing official knows the official OFA-KD code's students"):
        load_config(CONFIGS / "official" / "imagenet_cnn.yaml", ["student=test_resnet"])
    args = ["train", "--config", str(CONFIGS / "official" / "imagenet_cnn.yaml"), "--set", "student=test_resnet"]
    result = CliRunner().invoke(main, args, env={"CKA_PROBE_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: ") and "Traceback" not in result.output
    assert "not 'test_resnet'" in lines[0] and "--set eval_preprocessing=student" in lines[0]
    assert load_config(
        CONFIGS / "official" / "imagenet_cnn.yaml", ["student=test_resnet", "eval_preprocessing=student"]
    )


@pytest.mark.parametrize(
    ("recipe", "expected"),
    [
        ("official/cifar100_cnn", {"eval_preprocessing": "official", "crop_pct": 0.875, "interpolation": "bilinear"}),
        ("cifar100_cnn", {"eval_preprocessing": "recipe", "crop_pct": 1.0, "interpolation": "bilinear"}),
    ],
)
def test_a_run_records_its_evaluation_transform(tmp_path, recipe, expected):
    import json

    from torch.utils.data import TensorDataset

    from cka_probe.models import read_checkpoint
    from cka_probe.ofa.trainer import Trainer

    overrides = {
        "method": "scratch", "teacher": None, "num_classes": 10, "img_size": 16, "epochs": 1, "batch_size": 4,
        "workers": 0, "device": "cpu", "amp": False, "output_dir": str(tmp_path), "warmup_epochs": 0,
    }  # fmt: skip
    config = load_config(CONFIGS / f"{recipe}.yaml", overrides)
    data = TensorDataset(torch.zeros(8, 3, 16, 16), torch.zeros(8, dtype=torch.long))
    Trainer(config, datasets=(data, data)).fit()
    checkpoint = read_checkpoint(tmp_path / "last.pth")["eval_transform"]
    logged = json.loads((tmp_path / "metrics.jsonl").read_text().splitlines()[0])["eval_transform"]
    assert checkpoint == logged
    assert {key: checkpoint[key] for key in expected} == expected
    assert checkpoint["input_size"] == [3, 16, 16] and checkpoint["mean"] == list(CIFAR_STATS[0])


def test_erasing_after_mixup_erases_the_mixed_batch(tmp_path):
    from torch.utils.data import TensorDataset

    from cka_probe.ofa.trainer import Trainer

    values = {
        "method": "scratch", "student": "test_resnet", "num_classes": 10, "img_size": 16, "dataset": "fashion_mnist",
        "epochs": 1, "batch_size": 4, "workers": 0, "device": "cpu", "output_dir": str(tmp_path), "mixup": 0.8,
        "reprob": 1.0, "erase_after_mixup": True, "warmup_epochs": 0,
    }  # fmt: skip
    data = TensorDataset(torch.zeros(8, 3, 16, 16), torch.zeros(8, dtype=torch.long))
    trainer = Trainer(load_config(None, values), datasets=(data, data))
    torch.manual_seed(0)
    erased = trainer.eraser(torch.zeros(4, 3, 16, 16))
    assert all((image != 0).any() for image in erased)  # probability 1: every image of the batch gets a noise patch
    assert all((image == 0).any() for image in erased)  # ... of part of the image only


def test_analysis_config_is_a_valid_figure_job_of_students_against_their_teacher():
    from cka_probe.jobs.config import load_job_config

    job = load_job_config(CONFIGS / "analysis.yaml", "figure")
    labels = [request.display for request in job.models]
    assert labels == ["teacher", "scratch", "KD", "FitNet", "OFA"]
    assert all(request.checkpoint for request in job.models)
    assert [pair[1] for pair in job.panels[0]] == ["teacher"] * 4
