"""load_model with seeded random weights, modules passed in, provenance, and each model's own transform."""

from __future__ import annotations

import json

import pytest
import timm
import torch
from PIL import Image
from torch import nn

from cka_probe.errors import ArgumentError
from cka_probe.models import LoadedModel, load_model, transform_for


def _same_weights(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_random_weights_are_determined_by_the_seed():
    first = load_model("test_vit", weights="random", seed=3)
    again = load_model("test_vit", weights="random", seed=3)
    other = load_model("test_vit", weights="random", seed=4)
    assert _same_weights(first.model, again.model)
    assert not _same_weights(first.model, other.model)
    assert first.weights == "random" and first.seed == 3


def test_seeding_leaves_the_callers_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    load_model("test_resnet", weights="random", seed=0)
    assert torch.equal(torch.rand(3), expected)


def test_loaded_model_is_in_eval_mode_with_its_timm_facts():
    loaded = load_model("test_vit", weights="random")
    assert isinstance(loaded, LoadedModel)
    assert not loaded.model.training
    assert (loaded.name, loaded.timm_name, loaded.family) == ("test_vit", "test_vit", "vit")
    assert loaded.num_prefix_tokens == 1
    assert loaded.data_config["input_size"] == (3, 160, 160)
    assert load_model("test_resnet", weights="random").num_prefix_tokens == 0
    with pytest.raises(AttributeError):
        loaded.name = "other"  # frozen


def test_alias_name_is_kept_as_given_next_to_the_timm_name():
    loaded = load_model("mobilenetv2", weights="random")
    assert (loaded.name, loaded.timm_name, loaded.family) == ("mobilenetv2", "mobilenetv2_100", "cnn")


def test_provenance_is_json_ready_and_complete():
    record = load_model("test_vit", weights="random", seed=7).provenance()
    assert json.loads(json.dumps(record)) == record
    assert record["weights"] == "random" and record["seed"] == 7 and record["family"] == "vit"
    assert record["data_config"]["input_size"] == [3, 160, 160]
    assert record["timm_version"] == timm.__version__
    assert record["checkpoint_sha256"] is None


def test_a_plain_module_gets_unknown_family_and_imagenet_defaults():
    module = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    module.train()
    loaded = load_model(module, weights="random")
    assert loaded.model is module and not module.training
    assert (loaded.family, loaded.timm_name, loaded.weights, loaded.name) == ("unknown", None, "given", "Sequential")
    assert loaded.data_config["input_size"] == (3, 224, 224)
    assert loaded.data_config["mean"] == pytest.approx((0.485, 0.456, 0.406))


def test_a_timm_module_passed_in_keeps_its_weights_and_its_data_config():
    module = timm.create_model("test_vit")
    before = {k: v.clone() for k, v in module.state_dict().items()}
    loaded = load_model(module)
    assert loaded.timm_name == "test_vit" and loaded.family == "vit" and loaded.weights == "given"
    assert loaded.data_config["input_size"] == (3, 160, 160)
    assert all(torch.equal(before[k], v) for k, v in loaded.model.state_dict().items())


def test_num_classes_sets_the_classifier_size():
    loaded = load_model("test_vit", weights="random", num_classes=10)
    assert loaded.model.get_classifier().out_features == 10
    with pytest.raises(ArgumentError, match=r"num_classes applies to models built by name \(--num-classes-a/-b\)"):
        load_model(timm.create_model("test_vit"), num_classes=10)


def test_bad_weights_arguments_are_refused():
    with pytest.raises(
        ArgumentError, match=r"unknown weights 'imagenet'; use one of .* \(--weights on the command line\)"
    ):
        load_model("test_vit", weights="imagenet")
    with pytest.raises(ArgumentError, match=r"needs a checkpoint file: give checkpoint=PATH \(--checkpoint-a/-b"):
        load_model("test_vit", weights="checkpoint")
    with pytest.raises(ArgumentError, match=r"unknown checkpoint_select 'teacher'; use one of auto, student, ema"):
        load_model("test_vit", weights="random", checkpoint_select="teacher")


def test_each_model_gets_its_own_preprocessing():
    gray = Image.new("RGB", (40, 30), (128, 128, 128))
    vit = load_model("test_vit", weights="random")  # 160 px, bicubic, mean = std = 0.5
    effnet = load_model("test_efficientnet", weights="random")  # 160 px, ImageNet mean and std
    mobilenet = load_model("mobilenetv2", weights="random")  # 224 px
    vit_input, effnet_input, mobilenet_input = (transform_for(m)(gray) for m in (vit, effnet, mobilenet))
    assert vit_input.shape == effnet_input.shape == (3, 160, 160)
    assert mobilenet_input.shape == (3, 224, 224)
    assert torch.allclose(vit_input[:, 80, 80], torch.full((3,), (128 / 255 - 0.5) / 0.5), atol=1e-5)
    expected = (128 / 255 - torch.tensor([0.485, 0.456, 0.406])) / torch.tensor([0.229, 0.224, 0.225])
    assert torch.allclose(effnet_input[:, 80, 80], expected, atol=1e-5)


def test_transform_matches_timm_create_transform_for_the_data_config():
    loaded = load_model("test_vit", weights="random")
    ours = transform_for(loaded)
    reference = timm.data.create_transform(**timm.data.resolve_model_data_config(loaded.model), is_training=False)
    image = Image.effect_mandelbrot((50, 70), (-2, -1.2, 1, 1.2), 40).convert("RGB")
    assert torch.equal(ours(image), reference(image))


@pytest.fixture(scope="module")
def run_checkpoint(tmp_path_factory):
    """A checkpoint written by cka-probe's own trainer: test_resnet, 10 classes, EMA on, one epoch."""
    from torch.utils.data import TensorDataset

    from cka_probe.ofa.config import load_config
    from cka_probe.ofa.trainer import train

    out = tmp_path_factory.mktemp("run")
    generator = torch.Generator().manual_seed(0)
    data = TensorDataset(torch.randn(16, 3, 16, 16, generator=generator), torch.arange(16) % 10)
    values = {
        "method": "scratch", "student": "test_resnet", "num_classes": 10, "img_size": 16, "dataset": "fashion_mnist",
        "epochs": 1, "batch_size": 8, "workers": 0, "device": "cpu", "output_dir": str(out), "ema_decay": 0.5,
        "warmup_epochs": 0, "lr": 0.5, "opt": "sgd",
    }  # fmt: skip
    result = train(load_config(None, values), datasets=(data, data))
    return result.checkpoint


def test_a_training_checkpoint_gives_its_student_or_ema_with_its_classes(run_checkpoint):
    saved = torch.load(run_checkpoint, weights_only=True)
    student = load_model("test_resnet", checkpoint=run_checkpoint)
    assert student.model.num_classes == 10 and student.checkpoint_key == "student"
    assert all(torch.equal(student.model.state_dict()[k], v) for k, v in saved["student"].items())
    ema = load_model("test_resnet", checkpoint=run_checkpoint, checkpoint_select="ema")
    assert ema.checkpoint_key == "ema"
    assert all(torch.equal(ema.model.state_dict()[k], v) for k, v in saved["ema"].items())
    assert any(not torch.equal(saved["ema"][k], saved["student"][k]) for k in saved["student"])
    by_file = load_model(str(run_checkpoint))  # the run records its student's name
    assert by_file.timm_name == "test_resnet" and by_file.weights == "checkpoint"


def test_compare_reads_a_run_checkpoint(run_checkpoint):
    import cka_probe

    result = cka_probe.compare(
        "test_resnet", "test_resnet", data="synthetic", n=8, weights="random", checkpoint_a=str(run_checkpoint),
        progress=False, cache=False,
    )  # fmt: skip
    record = result.metadata["models"]["a"]
    assert record["weights"] == "checkpoint" and record["checkpoint_key"] == "student"
    assert record["checkpoint_path"] == str(run_checkpoint.resolve())


def test_a_model_argument_that_is_a_run_checkpoint_splits_into_name_and_file(run_checkpoint, tmp_path):
    from cka_probe.errors import CheckpointError
    from cka_probe.models import name_and_checkpoint

    assert name_and_checkpoint(str(run_checkpoint)) == ("test_resnet", str(run_checkpoint))
    assert name_and_checkpoint("test_resnet") == ("test_resnet", None)
    assert name_and_checkpoint("test_vit", run_checkpoint) == ("test_vit", str(run_checkpoint))
    bare = tmp_path / "bare.pth"
    torch.save(timm.create_model("test_resnet").state_dict(), bare)
    message = r"does not record its model; name the model and give the file as its checkpoint \(--checkpoint-a/-b"
    with pytest.raises(CheckpointError, match=message):
        name_and_checkpoint(str(bare))
    with pytest.raises(CheckpointError, match=message):
        load_model(str(bare), weights="random")


def test_the_cli_compares_a_runs_student_with_its_ema(run_checkpoint, tmp_path):
    import json

    import numpy as np
    import pandas as pd
    from click.testing import CliRunner

    from cka_probe.cli.main import main
    from cka_probe.jobs import parse_job_config

    run = str(run_checkpoint)
    result = CliRunner().invoke(
        main,
        [
            "compare",
            run,
            run,
            "--checkpoint-key-b",
            "ema",
            "--data",
            "synthetic",
            "-n",
            "8",
            "--out",
            str(tmp_path / "out"),
            "--name",
            "student_vs_ema",
            "--cache-dir",
            str(tmp_path / "cache"),
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    meta = json.loads((tmp_path / "out" / "student_vs_ema.json").read_text())
    assert meta["models"]["a"]["checkpoint_key"] == "student" and meta["models"]["b"]["checkpoint_key"] == "ema"
    assert meta["models"]["a"]["timm_name"] == "test_resnet"
    matrix = pd.read_csv(tmp_path / "out" / "student_vs_ema.csv", index_col=0).to_numpy()
    # two sets of weights, so two cache entries: the diagonal is not the self-similarity 1 everywhere
    assert not np.allclose(np.diag(matrix), 1.0, atol=1e-6)
    job = parse_job_config(
        {"models": [{"name": run, "label": "S"}, {"name": run, "label": "E", "checkpoint_key": "ema"}]}, "zoo"
    )
    student, ema = job.models
    assert (student.name, student.checkpoint, student.checkpoint_select) == ("test_resnet", run, "auto")
    assert (ema.checkpoint, ema.checkpoint_select) == (run, "ema")
    assert student.key_record() != ema.key_record()
