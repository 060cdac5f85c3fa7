"""The weights a run starts from (pretrained, initial checkpoint, EMA teacher), resume with more epochs, and
CKA to the teacher logged while the student trains."""

from __future__ import annotations

import json

import huggingface_hub
import pytest
import safetensors.torch
import timm
import torch

from cka_probe.errors import (
    CheckpointError,
    CheckpointMismatchError,
    ConfigError,
    StageError,
    WeightsUnavailableError,
)
from cka_probe.ofa.config import load_config
from cka_probe.ofa.trainer import CKA_FIGURE_NAME, Trainer

QUESTIONS = ["stage1", "stage2", "stage3", "stage4", "final"]


def _config(tmp_path, **changes):
    values = {
        "method": "scratch", "student": "test_resnet", "num_classes": 10, "img_size": 16,
        "dataset": "fashion_mnist", "epochs": 2, "batch_size": 8, "lr": 1e-2, "min_lr": 0.0, "warmup_epochs": 0,
        "opt": "sgd", "workers": 0, "output_dir": str(tmp_path / "run"), "device": "cpu", "amp": False,
        "limit_train_batches": 1, "limit_val_batches": 1,
    }  # fmt: skip
    values.update(changes)
    return load_config(None, values)


def _state(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, the hub in offline mode."""
    cache = tmp_path / "hub"
    cache.mkdir()
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def _cache_weights(cache, repo_id, state_dict):
    """A hub cache entry laid out as huggingface_hub writes one (refs/main -> snapshots/<commit>/file)."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    commit = "0123456789abcdef0123456789abcdef01234567"
    (repo / "snapshots" / commit).mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    safetensors.torch.save_file(state_dict, str(repo / "snapshots" / commit / "model.safetensors"))


# --------------------------------------------------------------------------- resume with more epochs


def test_resume_with_more_epochs_follows_the_longer_schedule(tmp_path, make_datasets):
    longer = Trainer(_config(tmp_path / "a", epochs=5), datasets=make_datasets()).fit()
    expected = {record["epoch"]: record["lr"] for record in longer.history}

    Trainer(_config(tmp_path / "b", epochs=2), datasets=make_datasets()).fit()  # ends at min_lr 0
    resumed = Trainer(_config(tmp_path / "b", epochs=5), datasets=make_datasets()).fit(resume="last")

    assert [record["epoch"] for record in resumed.history] == [3, 4, 5]
    for record in resumed.history:
        assert record["lr"] > 0
        assert record["lr"] == pytest.approx(expected[record["epoch"]], rel=1e-12)


def test_sched_on_updates_follows_warmup_and_cosine_step_by_step(tmp_path, make_datasets):
    """timm train.py's --sched-on-updates: linear warmup over warmup_epochs' updates, then the cosine of the
    whole run (timm's default, warmup_prefix off: the cosine's clock starts at update 0, as the per-epoch
    schedules do), the learning rate of every update written from the formula (3 updates an epoch here)."""
    import math

    lr, min_lr, warmup_lr, per_epoch, epochs = 0.1, 0.001, 0.01, 3, 3
    config = _config(
        tmp_path, epochs=epochs, lr=lr, min_lr=min_lr, warmup_lr=warmup_lr, warmup_epochs=1, sched_on_updates=True,
        limit_train_batches=per_epoch,
    )  # fmt: skip
    trainer = Trainer(config, datasets=make_datasets())
    seen = []
    step = trainer.optimizer.step

    def recording_step(*args, **kwargs):
        seen.append(trainer.optimizer.param_groups[0]["lr"])
        return step(*args, **kwargs)

    trainer.optimizer.step = recording_step
    trainer.fit()
    total, warmup = epochs * per_epoch, per_epoch
    expected = [
        warmup_lr + t * (lr - warmup_lr) / warmup
        if t < warmup
        else min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / total))
        for t in range(total)
    ]
    assert seen == pytest.approx(expected, rel=1e-9)


def test_sched_on_updates_resumes_at_the_step_it_stopped(tmp_path, make_datasets):
    values = {"epochs": 3, "lr": 0.1, "min_lr": 0.001, "sched_on_updates": True, "limit_train_batches": 2}
    whole = Trainer(_config(tmp_path / "a", **values), datasets=make_datasets()).fit()
    Trainer(_config(tmp_path / "b", **values), datasets=make_datasets()).fit(stop_after=1)
    resumed = Trainer(_config(tmp_path / "b", **values), datasets=make_datasets()).fit(resume="last")
    expected = {record["epoch"]: record["lr"] for record in whole.history}
    assert [record["epoch"] for record in resumed.history] == [2, 3]
    for record in resumed.history:
        assert record["lr"] == pytest.approx(expected[record["epoch"]], rel=1e-12)


def test_a_teacher_run_with_student_kwargs_is_rebuilt_as_that_run_trained_it(tmp_path, make_datasets):
    """teacher_checkpoint names a cka-probe run whose student had student_kwargs: without teacher_kwargs, the
    teacher is built with the run's (as every reader of a run builds it), and its weights load whole."""
    teacher_run = _config(tmp_path / "t", student="test_vit", student_kwargs={"depth": 4}, epochs=1)
    Trainer(teacher_run, datasets=make_datasets()).fit()
    path = tmp_path / "t" / "run" / "last.pth"
    kd = Trainer(
        _config(tmp_path / "s", method="kd", teacher="test_vit", teacher_checkpoint=str(path)), datasets=make_datasets()
    )
    assert len(kd.task.teacher.blocks) == 4  # test_vit has 6
    saved = torch.load(path, weights_only=True)["student"]
    assert all(torch.equal(kd.task.teacher.state_dict()[k], v) for k, v in saved.items())


# --------------------------------------------------------------------------- initial checkpoint


def test_initial_checkpoint_starts_the_student_from_its_weights(tmp_path, make_datasets):
    torch.manual_seed(7)
    weights = timm.create_model("test_resnet", num_classes=10).state_dict()
    for path in (tmp_path / "start.pth", tmp_path / "start.safetensors"):
        if path.suffix == ".pth":
            torch.save({"state_dict": weights}, path)  # a timm / official train.py wrapper
        else:
            safetensors.torch.save_file(weights, str(path))
        trainer = Trainer(_config(tmp_path, initial_checkpoint=str(path)), datasets=make_datasets())
        state = trainer.task.student.state_dict()
        assert all(torch.equal(state[k], weights[k]) for k in weights), path


def test_initial_checkpoint_of_another_classifier_size_keeps_a_fresh_classifier(tmp_path, make_datasets):
    torch.manual_seed(7)
    imagenet = timm.create_model("test_resnet", num_classes=1000).state_dict()
    torch.save(imagenet, tmp_path / "imagenet.pth")
    fresh = Trainer(_config(tmp_path / "fresh"), datasets=make_datasets()).task.student.state_dict()

    started = Trainer(_config(tmp_path, initial_checkpoint=str(tmp_path / "imagenet.pth")), datasets=make_datasets())
    state = started.task.student.state_dict()
    body = [k for k in imagenet if not k.startswith("fc.")]
    assert body and all(torch.equal(state[k], imagenet[k]) for k in body)
    assert state["fc.weight"].shape == (10, imagenet["fc.weight"].shape[1])
    assert torch.equal(state["fc.weight"], fresh["fc.weight"]) and torch.equal(state["fc.bias"], fresh["fc.bias"])


def test_initial_checkpoint_of_a_run_loads_its_student(tmp_path, make_datasets):
    first = Trainer(_config(tmp_path / "first", epochs=1), datasets=make_datasets())
    first.fit()
    trained = _state(first.task.student)
    second = Trainer(
        _config(tmp_path / "second", initial_checkpoint=str(tmp_path / "first" / "run" / "last.pth")),
        datasets=make_datasets(),
    )
    state = second.task.student.state_dict()
    assert all(torch.equal(state[k], trained[k]) for k in trained)


def test_a_bad_initial_checkpoint_is_one_line(tmp_path, make_datasets):
    torch.save(timm.create_model("test_vit", num_classes=10).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(CheckpointMismatchError, match=r"vit\.pth shares no parameter name with test_resnet"):
        Trainer(_config(tmp_path, initial_checkpoint=str(tmp_path / "vit.pth")), datasets=make_datasets())
    bigger = timm.create_model("test_resnet", num_classes=1000).state_dict()
    bigger["extra.weight"] = torch.zeros(1)
    torch.save(bigger, tmp_path / "extra.pth")
    with pytest.raises(CheckpointMismatchError, match=r"1 unexpected key\(s\) \['extra.weight'\]; give initial_check"):
        Trainer(_config(tmp_path, initial_checkpoint=str(tmp_path / "extra.pth")), datasets=make_datasets())
    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        Trainer(_config(tmp_path, initial_checkpoint=str(tmp_path / "garbage.pth")), datasets=make_datasets())
    with pytest.raises(CheckpointError, match="does not exist"):
        Trainer(_config(tmp_path, initial_checkpoint=str(tmp_path / "nope.pth")), datasets=make_datasets())


def test_pretrained_and_initial_checkpoint_together_are_refused(tmp_path):
    with pytest.raises(ConfigError, match="keep one with --set student_pretrained=false or --set initial_checkpoint"):
        _config(tmp_path, student_pretrained=True, initial_checkpoint="a.pth")


# --------------------------------------------------------------------------- pretrained weights


def test_pretrained_student_offline_is_one_line_naming_the_train_options(tmp_path, make_datasets, hub):
    with pytest.raises(WeightsUnavailableError) as error:
        Trainer(_config(tmp_path, student_pretrained=True), datasets=make_datasets())
    message = str(error.value)
    assert "\n" not in message and "offline mode" in message and "timm/test_resnet.r160_in1k" in message
    assert "--set student_pretrained=false" in message and "--set initial_checkpoint=PATH" in message
    assert "--weights" not in message  # compare's options are not train's


def test_pretrained_teacher_offline_is_one_line_naming_the_train_options(tmp_path, make_datasets, hub):
    config = _config(tmp_path, method="kd", teacher="test_resnet", teacher_pretrained=True)
    with pytest.raises(WeightsUnavailableError, match=r"--set teacher_checkpoint=PATH --set teacher_pretrained=false"):
        Trainer(config, datasets=make_datasets())


def test_pretrained_student_of_another_classifier_size_takes_the_cached_weights(tmp_path, make_datasets, hub):
    torch.manual_seed(11)
    published = timm.create_model("test_resnet").state_dict()  # 1,000 ImageNet classes
    _cache_weights(hub, "timm/test_resnet.r160_in1k", published)
    state = Trainer(_config(tmp_path, student_pretrained=True), datasets=make_datasets()).task.student.state_dict()
    assert all(torch.equal(state[k], published[k]) for k in published if not k.startswith("fc."))
    assert state["fc.weight"].shape[0] == 10


# --------------------------------------------------------------------------- the EMA teacher


def test_teacher_checkpoint_key_ema_is_the_ema_teacher(tmp_path, make_datasets):
    config = _config(tmp_path / "teacher", epochs=1, ema_decay=0.5, lr=0.5, limit_train_batches=3)
    run = Trainer(config, datasets=make_datasets())
    run.fit()
    checkpoint = str(tmp_path / "teacher" / "run" / "last.pth")
    student, ema = _state(run.task.student), _state(run.ema.module)
    assert any(not torch.equal(student[k], ema[k]) for k in student)
    for key, expected in (("auto", student), ("student", student), ("ema", ema)):
        config = _config(tmp_path, method="kd", teacher="test_resnet", teacher_checkpoint=checkpoint)
        teacher = Trainer(config.replace(teacher_checkpoint_key=key), datasets=make_datasets()).task.teacher
        state = teacher.state_dict()
        assert all(torch.equal(state[k], expected[k]) for k in expected), key


def test_a_teacher_file_of_another_model_names_the_recipe_keys(tmp_path, make_datasets):
    torch.save(timm.create_model("test_vit", num_classes=10).state_dict(), tmp_path / "vit.pth")
    config = _config(tmp_path, method="kd", teacher="test_resnet", teacher_checkpoint=str(tmp_path / "vit.pth"))
    with pytest.raises(
        CheckpointMismatchError,
        match=r"^teacher_checkpoint: checkpoint \S+vit\.pth .*test_resnet.*; set --set teacher=NAME \(and teacher_kwargs\) to the model it was saved from$",
    ):
        Trainer(config, datasets=make_datasets())


@pytest.mark.parametrize("key", ["initial_checkpoint", "teacher_checkpoint"])
def test_a_missing_start_or_teacher_file_names_its_recipe_key(tmp_path, make_datasets, key):
    extra = {"method": "kd", "teacher": "test_resnet"} if key == "teacher_checkpoint" else {}
    config = _config(tmp_path, **extra, **{key: str(tmp_path / "gone.pth")})
    with pytest.raises(CheckpointError, match=rf"^{key} \S+gone\.pth does not exist; fix it with --set {key}=PATH$"):
        Trainer(config, datasets=make_datasets())


def test_ema_teacher_from_a_file_without_ema_is_one_line(tmp_path, make_datasets):
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), tmp_path / "t.pth")
    config = _config(
        tmp_path, method="kd", teacher="test_resnet", teacher_checkpoint=str(tmp_path / "t.pth"),
        teacher_checkpoint_key="ema",
    )  # fmt: skip
    with pytest.raises(
        CheckpointError,
        match=r"^teacher_checkpoint \S+t\.pth holds no EMA weights; use --set teacher_checkpoint_key=auto for its weights",
    ):
        Trainer(config, datasets=make_datasets())


# --------------------------------------------------------------------------- CKA to the teacher


@pytest.fixture
def teacher_file(tmp_path):
    torch.manual_seed(5)
    path = tmp_path / "teacher.pth"
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), path)
    return path


def _log(result):
    return [json.loads(line) for line in (result.output_dir / "metrics.jsonl").read_text().splitlines()]


def test_cka_to_the_teacher_is_logged_every_k_epochs_and_drawn(tmp_path, make_datasets, teacher_file):
    config = _config(
        tmp_path, method="kd", teacher="test_resnet", teacher_checkpoint=str(teacher_file), epochs=3,
        cka_every=2, ema_decay=0.9,
    )  # fmt: skip
    result = Trainer(config, datasets=make_datasets()).fit()
    log = _log(result)
    assert ["cka_to_teacher" in record for record in log] == [False, True, True]  # every 2nd, and the last
    for record in log[1:]:
        cka = record["cka_to_teacher"]
        assert cka["n"] == 16  # the whole 16-image validation set: fewer than cka_probe_size
        assert list(cka["student"]) == QUESTIONS and list(cka["ema"]) == QUESTIONS
        assert all(0.0 < value <= 1.0 for model in ("student", "ema") for value in cka[model].values())
        assert record["cka_seconds"] >= 0
    assert (result.output_dir / CKA_FIGURE_NAME).stat().st_size > 0


def test_cka_every_zero_and_scratch_without_a_teacher_measure_nothing(tmp_path, make_datasets, teacher_file):
    off = _config(
        tmp_path / "off", method="kd", teacher="test_resnet", teacher_checkpoint=str(teacher_file), cka_every=0
    )
    for config in (off, _config(tmp_path / "scratch", teacher="test_resnet")):
        result = Trainer(config, datasets=make_datasets()).fit()
        assert all("cka_to_teacher" not in record for record in _log(result))
        assert not (result.output_dir / CKA_FIGURE_NAME).exists()


def test_scratch_with_a_teacher_checkpoint_is_measured_against_it(tmp_path, make_datasets, teacher_file):
    config = _config(tmp_path, teacher="test_resnet", teacher_checkpoint=str(teacher_file), cka_probe_size=12)
    trainer = Trainer(config, datasets=make_datasets())
    assert trainer.task.teacher is None  # scratch trains on the labels alone
    log = _log(trainer.fit())
    assert all(record["cka_to_teacher"]["n"] == 12 and "ema" not in record["cka_to_teacher"] for record in log)
    # the student against itself would be 1: the teacher's weights are the file's, not the student's
    assert all(value < 0.999 for value in log[-1]["cka_to_teacher"]["student"].values())


def test_a_resumed_run_draws_every_epoch_of_its_log(tmp_path, make_datasets, teacher_file):
    config = _config(tmp_path, method="kd", teacher="test_resnet", teacher_checkpoint=str(teacher_file), epochs=3)
    Trainer(config, datasets=make_datasets()).fit(stop_after=2)
    trainer = Trainer(config, datasets=make_datasets())
    result = trainer.fit(resume="last")
    assert [record["epoch"] for record in result.history] == [3]
    from cka_probe.ofa.monitor import cka_history

    assert [record["epoch"] for record in cka_history(result.output_dir / "metrics.jsonl")] == [1, 2, 3]


def test_a_student_the_probe_cannot_tap_is_one_line_naming_cka_every_0(tmp_path, make_datasets, teacher_file):
    shallow = {"student": "vit_tiny_patch16_224", "student_kwargs": {
        "img_size": 16, "patch_size": 4, "depth": 2, "embed_dim": 32, "num_heads": 2,
    }}  # fmt: skip
    config = _config(tmp_path, method="kd", teacher="test_resnet", teacher_checkpoint=str(teacher_file), **shallow)
    with pytest.raises(StageError, match=r"2 blocks has no four stages.*; or turn it off with --cka-every 0$"):
        Trainer(config, datasets=make_datasets())
    Trainer(config.replace(cka_every=0), datasets=make_datasets()).fit()  # KD itself needs no stages
