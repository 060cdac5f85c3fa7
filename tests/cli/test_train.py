"""``cka-probe train`` through click's CliRunner: a tiny offline run, resume, and one-line errors."""

from __future__ import annotations

import gzip
import json
import struct

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cka_probe.cli.main import main

TINY = [
    "--set", "method=scratch", "--set", "student=test_resnet", "--set", "dataset=fashion_mnist",
    "--set", "img_size=16", "--set", "epochs=1", "--set", "batch_size=8", "--set", "workers=0",
    "--set", "device=cpu", "--set", "warmup_epochs=0", "--no-progress",
]  # fmt: skip


pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    return CliRunner().invoke(main, list(args))


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    with gzip.open(path, "wb") as file:
        file.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def data_dir(tmp_path):
    rng = np.random.default_rng(0)
    folder = tmp_path / "fmnist"
    folder.mkdir()
    for prefix, n in (("train", 16), ("t10k", 8)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)
    return folder


@pytest.fixture
def recipe(tmp_path):
    path = tmp_path / "recipe.yaml"
    path.write_text("method: scratch\nlr: 1.0e-3\nopt: adamw\n")
    return path


def test_train_resume_and_overwrite(tmp_path, data_dir, recipe, assert_one_line_error):
    out = tmp_path / "run"
    args = ["train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", f"output_dir={out}"]
    first = run(*args)
    assert first.exit_code == 0, first.output
    assert "scratch test_resnet: epoch 1/1, top-1" in first.output and str(out / "last.pth") in first.output
    record = json.loads((out / "metrics.jsonl").read_text())
    assert record["epoch"] == 1 and record["val"]["n"] == 8

    assert_one_line_error(run(*args), "already holds a run", "--resume", "--overwrite")
    done = run(*args, "--resume")
    assert done.exit_code == 0 and "nothing to do" in done.output
    longer = run(*args, "--set", "epochs=2", "--resume")
    assert longer.exit_code == 0, longer.output
    assert "epoch 2/2" in longer.output
    assert run(*args, "--overwrite").exit_code == 0


def test_unknown_recipe_key(tmp_path, assert_one_line_error):
    bad = tmp_path / "bad.yaml"
    bad.write_text("method: scratch\nlearning_rate: 0.1\n")
    assert_one_line_error(
        run("train", "--config", str(bad)), "unknown key 'learning_rate'", "valid keys are amp, batch_size,"
    )


def test_unknown_method_and_override_key(recipe, assert_one_line_error):
    assert_one_line_error(
        run("train", "--config", str(recipe), "--set", "method=dkd"),
        "method: input should be 'scratch', 'kd', 'fitnet', 'ofa' or 'ofa+fitnet' (got 'dkd'); fix it in the file or with "
        "--set method=VALUE",
    )
    assert_one_line_error(run("train", "--config", str(recipe), "--set", "epoch=3"), "unknown key 'epoch'")


def test_missing_config_and_data(tmp_path, recipe, assert_one_line_error):
    assert_one_line_error(run("train", "--config", str(tmp_path / "nope.yaml")), "nope.yaml does not exist")
    missing = tmp_path / "no-such-dir"
    result = run("train", "--config", str(recipe), *TINY, "--set", f"data_dir={missing}")
    assert_one_line_error(result, f"Fashion-MNIST data path {missing} does not exist")


def test_bad_stage_through_the_cli(tmp_path, data_dir, recipe, assert_one_line_error):
    teacher = tmp_path / "teacher.pth"
    torch.save(__import__("timm").create_model("test_resnet", num_classes=10).state_dict(), teacher)
    result = run(
        "train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", "method=ofa",
        "--set", "teacher=test_resnet", "--set", f"teacher_checkpoint={teacher}", "--set", "ofa_stages=[1, 6]",
        "--set", f"output_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert_one_line_error(result, "ofa_stages[1]: input should be 1, 2, 3 or 4 (got 6)", "--set ofa_stages=[...]")
    assert not (tmp_path / "run").exists()  # refused by the recipe check, before any work


def test_resume_from_the_wrong_model(tmp_path, data_dir, recipe, assert_one_line_error):
    out = tmp_path / "run"
    base = ["train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", f"output_dir={out}"]
    assert run(*base).exit_code == 0
    result = run(*base, "--set", "student=test_convnext", "--resume")
    assert_one_line_error(result, "was written with student='test_resnet'")


def test_teacher_with_other_classes(tmp_path, data_dir, recipe, assert_one_line_error):
    teacher = tmp_path / "teacher100.pth"
    torch.save(__import__("timm").create_model("test_resnet", num_classes=100).state_dict(), teacher)
    result = run(
        "train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", "method=kd",
        "--set", "teacher=test_resnet", "--set", "teacher_kwargs={num_classes: 100}",
        "--set", f"teacher_checkpoint={teacher}", "--set", f"output_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert_one_line_error(result, "has 100 classes, student", "has 10")


def test_a_run_writes_best_and_summary_and_prints_one_line_per_epoch(tmp_path, data_dir, recipe):
    out = tmp_path / "run"
    args = ["train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", f"output_dir={out}"]
    result = run(*args, "--set", "epochs=2", "--set", "ema_decay=0.5")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if line.startswith("epoch ")]
    assert len(lines) == 2
    assert all(" train loss " in line and " val top-1 " in line and " top-5 " in line for line in lines)
    assert all(" EMA top-1 " in line and line.endswith(" s") for line in lines)
    assert {"last.pth", "best.pth", "best_ema.pth", "summary.csv", "metrics.jsonl"} <= {p.name for p in out.iterdir()}
    header, *rows = (out / "summary.csv").read_text().splitlines()
    assert header.split(",")[:3] == ["epoch", "train_loss", "eval_loss"] and "eval_ema_top1" in header
    assert [row.split(",")[0] for row in rows] == ["1", "2"]


def test_validate_a_run_checkpoint_against_an_independent_evaluation(tmp_path, data_dir, recipe):
    import timm
    from timm.data import create_transform

    from cka_probe.ofa.data import FashionMNIST

    out = tmp_path / "run"
    args = ["train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", f"output_dir={out}"]
    assert run(*args).exit_code == 0
    result = run("validate", str(out / "last.pth"), "--workers", "0", "--device", "cpu")
    assert result.exit_code == 0, result.output
    # reference: the student's weights into a fresh timm model, the eval transform written out, argmax per image
    model = timm.create_model("test_resnet", num_classes=10).eval()
    model.load_state_dict(torch.load(out / "last.pth", weights_only=True)["student"])
    transform = create_transform(16, is_training=False, crop_pct=1.0, interpolation="bilinear",
                                 mean=(0.2860,) * 3, std=(0.3530,) * 3)  # fmt: skip
    images = FashionMNIST(data_dir, train=False, transform=transform)
    with torch.no_grad():
        hits = sum(int(model(x[None]).argmax(1).item() == y) for x, y in images)
    assert f"test_resnet [student] on fashion_mnist (8 images): top-1 {100.0 * hits / 8:.2f}%" in result.output


def test_validate_an_official_checkpoint_and_refuse_one_of_another_architecture(
    tmp_path, data_dir, assert_one_line_error
):
    import argparse

    import timm
    from timm.utils import CheckpointSaver

    torch.manual_seed(0)
    model = timm.create_model("test_resnet", num_classes=10)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    args = argparse.Namespace(model="test_resnet", ofa_eps=[1.5], aa="rand-m9-mstd0.5-inc1")
    CheckpointSaver(
        model, optimizer, args=args, checkpoint_dir=str(tmp_path), recovery_dir=str(tmp_path)
    ).save_checkpoint(epoch=0, metric=1.0)
    official = tmp_path / "model_best.pth.tar"
    common = ["--data", str(data_dir), "--dataset", "fashion_mnist", "--img-size", "16", "--workers", "0"]
    result = run("validate", str(official), *common, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "test_resnet [state_dict] on fashion_mnist (8 images): top-1" in result.output
    assert_one_line_error(
        run("validate", str(official), *common, "--model", "test_convnext"),
        "was trained as test_resnet, not test_convnext",
    )
    assert_one_line_error(run("validate", str(official), *common, "--checkpoint-key", "ema"), "holds no EMA weights")


def test_nproc_beyond_the_devices_and_a_batch_that_does_not_split(tmp_path, recipe, assert_one_line_error):
    import os

    cores = os.cpu_count()
    result = run("train", "--config", str(recipe), *TINY, "--nproc", str(cores + 1))
    assert_one_line_error(result, f"--nproc {cores + 1} exceeds the {cores} CPU core(s)", f"use --nproc {cores}")
    result = run("train", "--config", str(recipe), *TINY, "--set", "batch_size=7", "--nproc", "2")
    assert_one_line_error(result, "batch_size 7 (the global batch) does not split over 2 process(es)")
    result = run("train", "--config", str(recipe), *TINY, "--set", "device=cuda:99", "--nproc", "2")
    assert_one_line_error(result, "GPU")


def test_python_dash_m_cka_probe_runs_the_cli():
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-m", "cka_probe", "validate", "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "Usage: cka-probe validate [OPTIONS] CHECKPOINT" in done.stdout


class _Pickled:
    """Any object outside the allowlist."""


def test_validate_refuses_a_checkpoint_pickling_an_object_outside_the_allowlist(tmp_path, assert_one_line_error):
    import timm

    path = tmp_path / "pickled.pth"
    torch.save({"state_dict": timm.create_model("test_resnet").state_dict(), "extra": _Pickled()}, path)
    result = run("validate", str(path), "--model", "test_resnet", "--dataset", "fashion_mnist")
    assert_one_line_error(result, "_Pickled, outside the allowlist of harmless globals (argparse.Namespace)")


def test_cka_every_logs_and_draws_cka_to_the_teacher_and_zero_turns_it_off(tmp_path, data_dir, recipe):
    teacher = tmp_path / "teacher.pth"
    torch.save(__import__("timm").create_model("test_resnet", num_classes=10).state_dict(), teacher)
    base = [
        "train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", "method=kd",
        "--set", "teacher=test_resnet", "--set", f"teacher_checkpoint={teacher}", "--set", "epochs=2",
    ]  # fmt: skip
    on = run(*base, "--set", f"output_dir={tmp_path / 'on'}", "--cka-every", "2")
    assert on.exit_code == 0, on.output
    log = [json.loads(line) for line in (tmp_path / "on" / "metrics.jsonl").read_text().splitlines()]
    assert ["cka_to_teacher" in record for record in log] == [False, True]
    assert set(log[1]["cka_to_teacher"]["student"]) == {"stage1", "stage2", "stage3", "stage4", "final"}
    assert (tmp_path / "on" / "cka_to_teacher.png").exists()

    off = run(*base, "--set", f"output_dir={tmp_path / 'off'}", "--cka-every", "0")
    assert off.exit_code == 0, off.output
    log = [json.loads(line) for line in (tmp_path / "off" / "metrics.jsonl").read_text().splitlines()]
    assert all("cka_to_teacher" not in record for record in log)
    assert not (tmp_path / "off" / "cka_to_teacher.png").exists()


def test_bad_cka_every_and_bad_start_weights_are_one_line(tmp_path, data_dir, recipe, assert_one_line_error):
    base = ["train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}"]
    result = run(*base, "--cka-every", "-1")
    assert result.exit_code == 2 and "--cka-every" in result.output and "-1 is not in the range x>=0" in result.output
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    result = run(*base, "--set", f"initial_checkpoint={tmp_path / 'garbage.pth'}", "--set", f"output_dir={tmp_path}")
    assert_one_line_error(result, "cannot read checkpoint", "garbage.pth")
    torch.save(__import__("timm").create_model("test_vit").state_dict(), tmp_path / "vit.pth")
    result = run(*base, "--set", f"initial_checkpoint={tmp_path / 'vit.pth'}", "--set", f"output_dir={tmp_path}")
    assert_one_line_error(result, "shares no parameter name with test_resnet")
    result = run(*base, "--set", "student_pretrained=true", "--set", f"initial_checkpoint={tmp_path / 'vit.pth'}")
    assert_one_line_error(result, "keep one with --set student_pretrained=false or --set initial_checkpoint=null")
    torch.save(__import__("timm").create_model("test_resnet", num_classes=10).state_dict(), tmp_path / "t.pth")
    shallow = "student_kwargs={img_size: 16, patch_size: 4, depth: 2, embed_dim: 32, num_heads: 2}"
    result = run(
        *base, "--set", "method=kd", "--set", "teacher=test_resnet", "--set", f"teacher_checkpoint={tmp_path / 't.pth'}",
        "--set", "student=vit_tiny_patch16_224", "--set", shallow, "--set", f"output_dir={tmp_path / 'kd'}",
    )  # fmt: skip
    assert_one_line_error(result, "2 blocks has no four stages", "or turn it off with --cka-every 0")


def test_pretrained_student_offline_is_one_line(tmp_path, data_dir, recipe, assert_one_line_error, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    result = run(
        "train", "--config", str(recipe), *TINY, "--set", f"data_dir={data_dir}", "--set", "student_pretrained=true",
        "--set", f"output_dir={tmp_path / 'run'}",
    )  # fmt: skip
    assert_one_line_error(result, "offline mode", "--set student_pretrained=false", "--set initial_checkpoint=PATH")
    assert not (tmp_path / "run" / "last.pth").exists()


def test_validate_an_official_run_with_the_transform_it_evaluated_with(tmp_path, data_dir):
    """An official OFA-KD train.py checkpoint (its args name a --distiller) is evaluated as the run was: timm
    0.6.5's data config of its student (ResNet-18: crop 0.875, bilinear; timm 1.0 says 0.95, bicubic), and
    the run's own --crop-pct / --interpolation over it, as timm 0.6.5's resolve_data_config ranks them."""
    import argparse

    import timm

    from cka_probe.ofa.validate import validate_checkpoint

    torch.manual_seed(0)
    state = timm.create_model("resnet18", num_classes=10).state_dict()
    plain = {"model": "resnet18", "distiller": "ofa", "dataset": "", "img_size": None}
    for options, crop, interpolation in (
        ({"crop_pct": None, "interpolation": ""}, 0.875, "bilinear"),
        ({"crop_pct": 1.0, "interpolation": ""}, 1.0, "bilinear"),
    ):
        path = tmp_path / "model_best.pth.tar"
        torch.save(
            {"epoch": 3, "arch": "resnet18", "state_dict": state, "args": argparse.Namespace(**plain, **options)}, path
        )
        result = validate_checkpoint(
            path, data_dir=str(data_dir), dataset="fashion_mnist", img_size=16, samples=8, workers=0, device="cpu"
        )
        assert (result["data_config"]["crop_pct"], result["data_config"]["interpolation"]) == (crop, interpolation)
    assert timm.create_model("resnet18").pretrained_cfg["crop_pct"] == 0.95  # what the official table replaces


@pytest.mark.parametrize(
    "sets, fragments",
    [
        (["warmup_epochs=1", "warmup_lr=0"], ["warmup_lr 0 with a per-epoch schedule", "--set warmup_lr=VALUE"]),
        (["teacher_checkpoint=gone.pth", "method=kd", "teacher=test_resnet"], ["teacher_checkpoint gone.pth does not exist", "--set teacher_checkpoint=PATH"]),
        (["initial_checkpoint=gone.pth"], ["initial_checkpoint gone.pth does not exist", "--set initial_checkpoint=PATH"]),
    ],
)  # fmt: skip
def test_start_and_schedule_mistakes_are_one_line_exit_2(tmp_path, recipe, sets, fragments, assert_one_line_error):
    extra = [arg for value in sets for arg in ("--set", value)]
    result = run("train", "--config", str(recipe), *TINY, *extra, "--set", f"output_dir={tmp_path / 'out'}")
    assert_one_line_error(result, *fragments)
    assert not (tmp_path / "out").exists()


def test_a_teacher_file_of_another_model_is_one_line_exit_2(tmp_path, recipe, assert_one_line_error):
    import timm

    torch.save(timm.create_model("test_vit", num_classes=10).state_dict(), tmp_path / "vit.pth")
    sets = [
        "method=kd",
        "teacher=test_resnet",
        f"teacher_checkpoint={tmp_path / 'vit.pth'}",
        f"output_dir={tmp_path / 'out'}",
    ]
    result = run("train", "--config", str(recipe), *TINY, *[arg for value in sets for arg in ("--set", value)])
    assert_one_line_error(result, "teacher_checkpoint: checkpoint", "set --set teacher=NAME (and teacher_kwargs)")
