"""From training to analysis: every command that reads a run opens a ``cka-probe train`` checkpoint with no
extra flags, rebuilt as it trained (``student_kwargs``) and fed images as its validation prepared them.

The runs (``tests/tiny_runs.py``): a ViT student built with img_size 32, patch 4, depth 2, embed_dim 32,
trained one epoch at 32 px on Fashion-MNIST-shaped data, seeds 0 and 1. References: a 32-px image in
4-px patches is 8 x 8 = 64 patch tokens plus the class token, of width 32; Fashion-MNIST's mean and std are
0.2860 and 0.3530; the run folder and file (``seed0/best.pth``) and its epoch name a run.
"""

from __future__ import annotations

import json

import pytest
import timm
import torch
import yaml
from click.testing import CliRunner

from cka_probe.cli.main import main
from cka_probe.jobs import CKAResult
from tests.tiny_runs import FASHION_MNIST_MEAN, FASHION_MNIST_STD, STUDENT, train_tiny_run, write_fashion_mnist

FAST = ["-n", "8", "--no-progress", "--device", "cpu"]
RUN_INPUT = [3, 32, 32]

pytestmark = pytest.mark.usefixtures("one_thread")


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two seeds of one run, under ``runs/seed0`` and ``runs/seed1``."""
    root = tmp_path_factory.mktemp("study")
    data_dir = write_fashion_mnist(root / "fmnist")
    torch.set_num_threads(1)
    return [train_tiny_run(root / "runs", seed=seed, data_dir=data_dir) for seed in (0, 1)]


def _assert_run_side(record: dict) -> None:
    assert record["timm_name"] == STUDENT and record["weights"] == "checkpoint"
    assert record["data_config"]["input_size"] == RUN_INPUT and record["data_config_source"] == "run"
    assert record["data_config"]["mean"] == pytest.approx(FASHION_MNIST_MEAN)
    assert record["data_config"]["std"] == pytest.approx(FASHION_MNIST_STD)
    assert record["model_kwargs"]["patch_size"] == 4 and record["epoch"] == 1


def test_compare_two_seeds_at_the_runs_size_with_labels_that_tell_them_apart(runs, tmp_path):
    seed0, seed1 = runs[0] / "best.pth", runs[1] / "best.pth"
    result = run("compare", seed0, seed1, *FAST, "--out", tmp_path)
    assert result.exit_code == 0, result.output
    stem = "vit_tiny_patch16_224_seed0_best.pth_epoch_1_vs_vit_tiny_patch16_224_seed1_best.pth_epoch_1"
    meta = json.loads((tmp_path / f"{stem}.json").read_text())
    for side in ("a", "b"):
        _assert_run_side(meta["models"][side])
    labels = meta["models"]["a"]["label"], meta["models"]["b"]["label"]
    assert labels == (f"{STUDENT} · seed0/best.pth (epoch 1)", f"{STUDENT} · seed1/best.pth (epoch 1)")
    shapes = {row["name"]: row["raw_shape"] for row in meta["layers"]["a"]}
    assert shapes["blocks.0.mlp.act"] == [65, 128]  # 64 patch tokens and the class token; mlp_ratio 4 x 32
    title = CKAResult.load(tmp_path / f"{stem}.csv").figure_title().title
    assert title == f"{labels[0]} vs {labels[1]}"
    assert f"{labels[0]} vs {labels[1]}" in result.output


def test_compare_same_file_names_in_other_folders_show_more_of_the_path(runs, tmp_path):
    other = tmp_path / "copy" / "seed0"
    other.mkdir(parents=True)
    (other / "best.pth").write_bytes((runs[0] / "best.pth").read_bytes())
    result = run("compare", runs[0] / "best.pth", other / "best.pth", *FAST, "--out", tmp_path / "out")
    assert result.exit_code == 0, result.output
    meta = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert meta["models"]["a"]["label"] == f"{STUDENT} · runs/seed0/best.pth (epoch 1)"
    assert meta["models"]["b"]["label"] == f"{STUDENT} · copy/seed0/best.pth (epoch 1)"


def test_compare_a_run_against_a_model_prepares_each_side_its_own_way(runs, tmp_path):
    result = run(
        "compare", runs[0] / "last.pth", "test_resnet", *FAST, "--weights", "random", "--out", tmp_path,
        "--img-size-b", 48,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads(next(tmp_path.glob("*.json")).read_text())
    _assert_run_side(meta["models"]["a"])
    b = meta["models"]["b"]
    assert b["data_config"]["input_size"] == [3, 48, 48] and b["data_config_source"] == "user img_size over model"
    assert b["data_config"]["mean"] == pytest.approx(timm.models.get_pretrained_cfg("test_resnet").mean)
    assert meta["models"]["a"]["label"] == f"{STUDENT} · seed0/last.pth (epoch 1)" and b["label"] == "test_resnet"
    assert next(tmp_path.glob("*.json")).name == "vit_tiny_patch16_224_seed0_last.pth_epoch_1_vs_test_resnet.json"


def test_compare_a_run_checkpoint_under_another_architecture_is_one_line(runs, tmp_path, assert_one_line_error):
    result = run("compare", "resnet18", "test_resnet", "--checkpoint-a", runs[0] / "best.pth", *FAST, "--out", tmp_path)
    assert_one_line_error(result, f"was trained as {STUDENT}, not resnet18", f"pass {STUDENT} as the model name")


def test_layers_of_a_run_at_its_own_size(runs):
    result = run("layers", runs[0] / "best.pth")
    assert result.exit_code == 0, result.output
    rows = {line.split()[1]: line for line in result.output.splitlines()[1:-1]}
    assert len([name for name in rows if name.startswith("blocks.")]) == 2  # depth 2
    assert "(65, 128)" in rows["blocks.0.mlp.act"]


def test_figure_and_zoo_read_runs(runs, tmp_path):
    models = [
        {"name": str(runs[0] / "best.pth"), "label": "seed0"},
        {"name": str(runs[1] / "best.pth"), "label": "seed1"},
    ]
    common = {"data": {"n": 8}, "analysis": {"device": "cpu"}, "models": models}
    figure = tmp_path / "fig.yaml"
    resized = {"name": "test_resnet", "weights": "random", "img_size": 40}
    panels = [[["seed0", "seed1"], ["seed0", "test_resnet"]]]
    figure.write_text(
        yaml.safe_dump({**common, "models": [*models, resized], "panels": panels, "output": {"formats": ["png"]}})
    )
    result = run("figure", figure, "--out", tmp_path / "figure", "--no-progress")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "figure" / "fig.json").read_text())
    for label in ("seed0", "seed1"):
        _assert_run_side(meta["models"][label])
    assert meta["models"]["test_resnet"]["data_config"]["input_size"] == [3, 40, 40]
    assert meta["models"]["test_resnet"]["data_config_source"] == "user img_size over model"
    zoo = tmp_path / "zoo.yaml"
    zoo.write_text(yaml.safe_dump(common))
    result = run("zoo", zoo, "--out", tmp_path / "zoo", "--no-progress")
    assert result.exit_code == 0, result.output
    meta = json.loads(next((tmp_path / "zoo").glob("*.json")).read_text())
    for label in ("seed0", "seed1"):
        _assert_run_side(meta["models"][label])


def test_identify_reads_runs_without_model(runs, tmp_path):
    result = run(
        "identify", runs[0] / "best.pth", runs[1] / "best.pth", *FAST, "--pool", "mean", "--out", tmp_path,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "identify.json").read_text())
    assert [network["label"] for network in meta["networks"]] == ["seed0/best.pth", "seed1/best.pth"]
    for network in meta["networks"]:
        _assert_run_side(network)


def test_validate_reads_a_run_with_student_kwargs(runs):
    result = run("validate", runs[0] / "best.pth", "--workers", 0, "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"{STUDENT} [student] on fashion_mnist (8 images): top-1 ")


def test_validate_takes_the_transform_the_run_recorded(runs, tmp_path):
    from cka_probe.models import read_checkpoint
    from cka_probe.ofa.validate import validate_checkpoint

    state = read_checkpoint(runs[0] / "best.pth")
    state["eval_transform"].update(crop_pct=0.5)
    torch.save(state, tmp_path / "best.pth")
    result = validate_checkpoint(tmp_path / "best.pth", workers=0, device="cpu")
    assert result["data_config"]["crop_pct"] == 0.5 and result["data_config"]["input_size"] == RUN_INPUT
    assert result["data_config"]["mean"] == pytest.approx(FASHION_MNIST_MEAN) and result["n"] == 8


def test_a_config_img_size_must_be_positive(tmp_path, assert_one_line_error):
    config = tmp_path / "zoo.yaml"
    config.write_text(yaml.safe_dump({"models": [{"name": "test_resnet", "img_size": 0}, "test_vit"]}))
    assert_one_line_error(
        run("zoo", config, "--out", tmp_path / "zoo"), "models[0].img_size", "greater than or equal to 1 (got 0)"
    )


def test_layers_and_identify_take_an_input_size(runs, tmp_path):
    result = run("layers", "test_resnet", "--img-size", 64)
    assert result.exit_code == 0, result.output
    first = result.output.splitlines()[1]
    assert "(16, 32, 32)" in first  # test_resnet's stem: stride 2 (64 px -> 32), 16 channels
    config = tmp_path / "identify.yaml"
    checkpoints = [str(runs[0] / "best.pth"), str(runs[1] / "best.pth")]
    config.write_text(yaml.safe_dump({"checkpoints": checkpoints, "data": {"n": 8}, "analysis": {"img_size": 32}}))
    result = run("identify", "--config", config, "--pool", "mean", "--no-progress", "--out", tmp_path / "o")
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "o" / "identify.json").read_text())
    assert [n["data_config_source"] for n in meta["networks"]] == ["user img_size over run"] * 2


def test_side_labels_of_modules_built_from_runs_and_of_ema_weights(runs, tmp_path):
    from cka_probe.jobs import side_labels
    from cka_probe.models import model_from_checkpoint

    assert side_labels(runs[0] / "best.pth", "test_resnet")[0] == f"{STUDENT} · seed0/best.pth (epoch 1)"  # a Path
    module = model_from_checkpoint(runs[0] / "best.pth")
    assert side_labels(module, "test_resnet") == ("VisionTransformer · seed0/best.pth (epoch 1)", "test_resnet")
    ema_run = train_tiny_run(tmp_path, seed=0, data_dir=write_fashion_mnist(tmp_path / "fmnist"), ema_decay=0.9)
    last = str(ema_run / "last.pth")
    assert side_labels(last, last, checkpoint_key_b="ema") == (
        f"{STUDENT} · seed0/last.pth (epoch 1)",
        f"{STUDENT} · seed0/last.pth (EMA, epoch 1)",
    )


def test_cached_features_are_keyed_by_the_input_size(runs, tmp_path):
    args = ["compare", runs[0] / "best.pth", "test_resnet", *FAST, "--weights", "random", "--overwrite"]
    assert "from the cache" not in run(*args, "--out", tmp_path / "1").output
    assert "(features of A and B from the cache)" in run(*args, "--out", tmp_path / "2").output
    resized = run(*args, "--img-size-b", 48, "--out", tmp_path / "3")
    assert resized.exit_code == 0 and "(features of A from the cache)" in resized.output


def test_identify_without_model_on_files_that_record_none_is_one_line(tmp_path, assert_one_line_error):
    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(timm.create_model("test_resnet").state_dict(), tmp_path / f"net{seed}.pth")
    result = run("identify", tmp_path / "net0.pth", tmp_path / "net1.pth", *FAST, "--out", tmp_path / "o")
    assert_one_line_error(result, "no model name for checkpoint", "net0.pth", "pass --model NAME")
