"""The distillation task as the official OFA-KD code pairs its lists, and OFA combined with FitNet (issues #5, #10)."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from cka_probe.errors import ConfigError
from cka_probe.ofa.config import load_config
from cka_probe.ofa.task import DistillationTask


def _task(model_factory, method, **kwargs):
    return DistillationTask(
        method,
        model_factory("resnet", seed=1),
        model_factory("vit", seed=2),
        torch.nn.CrossEntropyLoss(),
        (3, 32, 32),
        **kwargs,
    )


def _official_ofa_loss(logits_student, logits_teacher, target_mask, eps, temperature=1.0):
    """Reference: ``ofa_loss`` of the official ``distillers/ofa.py``, written from its formula."""
    pred_student = F.softmax(logits_student / temperature, dim=1)
    pred_teacher = F.softmax(logits_teacher / temperature, dim=1)
    prod = (pred_teacher + target_mask) ** eps
    return torch.sum(-(prod - target_mask) * torch.log(pred_student), dim=-1).mean()


def test_gamma_list_is_paired_with_the_stages_in_the_order_given(model_factory, images, labels):
    stages, gammas, weights = [3, 1], [1.2, 1.4, 1.6], [0.5, 2.0]
    task = _task(model_factory, "ofa", ofa_stages=stages, ofa_gamma=gammas, ofa_loss_weight=weights).eval()
    out = task(images, labels)
    with torch.no_grad():
        teacher_logits = task.teacher(images)
        logits, features = task.student_taps(images, stages)
        mask = F.one_hot(labels, 10).float()
        # the official forward: zip(ofa_stage, ofa_eps) for the branches, ofa_eps[-1] for the logits
        expected = {
            f"ofa_stage{stage}": _official_ofa_loss(task.trainable.branches[f"stage{stage}"](features[stage]),
                                                    teacher_logits, mask, eps)
            for stage, eps in zip(stages, gammas)
        }  # fmt: skip
        expected["ofa_logits"] = _official_ofa_loss(logits, teacher_logits, mask, gammas[-1])
    for name, value in expected.items():
        torch.testing.assert_close(out[name], value, rtol=1e-5, atol=1e-6)
    total = out["ce"] + out["ofa_logits"] + 0.5 * out["ofa_stage3"] + 2.0 * out["ofa_stage1"]
    torch.testing.assert_close(out["loss"], total)
    # stage 3 took gamma 1.2: computed with stage 1's 1.4 instead it differs
    assert not torch.allclose(
        expected["ofa_stage3"],
        _official_ofa_loss(task.trainable.branches["stage3"](features[3]), teacher_logits, mask, 1.4),
    )


def test_a_stage_listed_twice_is_refused(model_factory, tmp_path):
    with pytest.raises(ConfigError, match=r"ofa_stages lists stage 2 more than once \(\[2, 1, 2\]\); list each stage"):
        _task(model_factory, "ofa", ofa_stages=[2, 1, 2], ofa_gamma=[1.0, 1.1, 1.2, 1.3])
    with pytest.raises(ConfigError, match="fitnet_stages lists stage 4 more than once"):
        _task(model_factory, "ofa+fitnet", fitnet_stages=[4, 4])
    from pathlib import Path

    from click.testing import CliRunner

    from cka_probe.cli.main import main

    recipe = Path(__file__).resolve().parents[2] / "configs" / "ofa" / "cifar100_cnn.yaml"
    args = ["train", "--config", str(recipe), "--set", "method=ofa", "--set", "teacher=test_vit",
            "--set", "ofa_stages=[3,1,3]", "--set", "ofa_gamma=[1,1,1,1]"]  # fmt: skip
    result = CliRunner().invoke(main, args, env={"CKA_PROBE_CACHE": str(tmp_path / "cache")})
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "ofa_stages" in lines[0] and "list each stage" in lines[0], result.output


def test_ofa_with_fitnet_has_both_sets_of_losses_with_their_own_weights(model_factory, images, labels):
    task = _task(
        model_factory, "ofa+fitnet", ofa_stages=[2, 4], ofa_gamma=1.5, ofa_loss_weight=0.25, kd_loss_weight=2.0,
        fitnet_stages=[1, 3], fitnet_loss_weight=3.0, gt_loss_weight=0.5,
    )  # fmt: skip
    out = task(images, labels)
    parts = {"ce", "ofa_logits", "ofa_stage2", "ofa_stage4", "fitnet_stage1", "fitnet_stage3"}
    assert set(out) == {"loss", "output"} | parts
    total = (0.5 * out["ce"] + 2.0 * out["ofa_logits"] + 0.25 * (out["ofa_stage2"] + out["ofa_stage4"])
             + 3.0 * (out["fitnet_stage1"] + out["fitnet_stage3"]))  # fmt: skip
    torch.testing.assert_close(out["loss"], total)
    assert set(task.trainable.branches) == {"stage2", "stage4"} and set(task.trainable.adapters) == {"stage1", "stage3"}
    # each component equals what the single methods compute for the same modules
    ofa = _task(model_factory, "ofa", ofa_stages=[2, 4], ofa_gamma=1.5)
    fitnet = _task(model_factory, "fitnet", fitnet_stages=[1, 3])
    ofa.trainable.load_state_dict(task.trainable.state_dict(), strict=False)
    fitnet.trainable.load_state_dict(task.trainable.state_dict(), strict=False)
    for single in (ofa, fitnet):
        single_out = single(images, labels)
        for name in set(single_out) - {"loss", "output"}:
            torch.testing.assert_close(out[name], single_out[name], rtol=1e-5, atol=1e-6)


def test_ofa_with_fitnet_trains_the_student_the_branches_and_the_adapters(model_factory, images, labels):
    from cka_probe.ofa.trainer import build_optimizer

    task = _task(model_factory, "ofa+fitnet", ofa_stages=[1, 2], fitnet_stages=[3, 4])
    config = load_config(None, {"opt": "sgd", "lr": 0.1, "weight_decay": 0.0})
    optimizer = build_optimizer(task.trainable, config)
    optimised = {id(p) for group in optimizer.param_groups for p in group["params"]}
    before = {name: p.detach().clone() for name, p in task.trainable.named_parameters()}
    task(images, labels)["loss"].backward()
    optimizer.step()
    for prefix in ("student.", "branches.stage1.", "branches.stage2.", "adapters.stage3.", "adapters.stage4."):
        params = [(n, p) for n, p in task.trainable.named_parameters() if n.startswith(prefix)]
        assert params and all(id(p) in optimised for _, p in params), prefix
        assert any(not torch.equal(p, before[n]) for n, p in params), prefix
    assert all(not p.requires_grad for p in task.teacher.parameters())


def test_recipe_schema_takes_ofa_with_fitnet_and_checks_its_ofa_lists():
    config = load_config(None, ["method=ofa+fitnet", "teacher=test_vit", "ofa_stages=[4,2]", "ofa_gamma=[1,2,3]"])
    assert config.method == "ofa+fitnet" and config.ofa_stages == [4, 2]
    with pytest.raises(ConfigError, match="ofa_gamma has 2 values; give one, or 3"):
        load_config(None, ["method=ofa+fitnet", "teacher=test_vit", "ofa_stages=[4,2]", "ofa_gamma=[1,2]"])
