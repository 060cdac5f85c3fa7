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
    assert_one_line_error(run("train", "--config", str(bad)), "unknown key 'learning_rate'", "valid keys: method,")


def test_unknown_method_and_override_key(recipe, assert_one_line_error):
    assert_one_line_error(run("train", "--config", str(recipe), "--set", "method=dkd"), "unknown method 'dkd'")
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
    assert_one_line_error(result, "stage 6 does not exist", "valid stages are [1, 2, 3, 4]")


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
