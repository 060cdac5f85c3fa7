"""DistributedDataParallel on CPU (gloo, 2 processes) against single-process training with the same global batch.

The student is a LayerNorm ViT (no BatchNorm, whose statistics are per device by design), without
dropout, drop-path or mixup, so one global batch gives one gradient whatever the split: the mean of
two half-batch means (DDP's gradient average), or the sum of two half-batch means / 2 (accumulation).
"""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import TensorDataset

from cka_probe.errors import ConfigError
from cka_probe.ofa.config import load_config
from cka_probe.ofa.distributed import local_batch_size
from cka_probe.ofa.trainer import Trainer

STUDENT = {
    "student": "vit_tiny_patch16_224",
    "student_kwargs": {"img_size": 16, "patch_size": 4, "depth": 4, "embed_dim": 32, "num_heads": 2},
}


def _datasets():
    generator = torch.Generator().manual_seed(123)
    x_train, y_train = torch.randn(32, 3, 16, 16, generator=generator), torch.randint(0, 10, (32,), generator=generator)
    x_val, y_val = torch.randn(12, 3, 16, 16, generator=generator), torch.randint(0, 10, (12,), generator=generator)
    return TensorDataset(x_train, y_train), TensorDataset(x_val, y_val)


def _values(output_dir, teacher, **changes):
    values = {
        "method": "ofa", **STUDENT, "teacher": "test_resnet", "teacher_checkpoint": str(teacher), "num_classes": 10,
        "img_size": 16, "dataset": "fashion_mnist", "epochs": 2, "batch_size": 8, "lr": 0.05, "opt": "sgd",
        "warmup_epochs": 0, "ema_decay": 0.9, "smoothing": 0.1, "workers": 0, "output_dir": str(output_dir),
        "device": "cpu", "ofa_gamma": 1.5, "amp": False,
    }  # fmt: skip
    values.update(changes)
    return values


def _states(trainer):
    return {
        "student": {k: v.detach().clone() for k, v in trainer.task.student.state_dict().items()},
        "branches": {k: v.detach().clone() for k, v in trainer.task.trainable.branches.state_dict().items()},
        "ema": {k: v.detach().clone() for k, v in trainer.ema.module.state_dict().items()},
        "step": trainer.step,
    }


def _worker(rank, world, port, tmp, teacher):
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world),
    )  # fmt: skip
    torch.set_num_threads(1)
    try:
        full = Trainer(load_config(None, _values(f"{tmp}/ddp_full", teacher)), datasets=_datasets())
        history = full.fit().history
        paused_values = _values(f"{tmp}/ddp_paused", teacher)
        Trainer(load_config(None, paused_values), datasets=_datasets()).fit(stop_after=1)
        resumed = Trainer(load_config(None, paused_values), datasets=_datasets())
        resumed.fit(resume="last")
        if rank == 0:
            torch.save({"full": _states(full), "resumed": _states(resumed), "history": history}, f"{tmp}/ddp_rank0.pt")
        # every rank holds the same weights after each step
        flat = torch.cat([p.detach().flatten() for p in full.task.student.parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            torch.save({"ranks_equal": all(torch.equal(gathered[0], g) for g in gathered)}, f"{tmp}/ddp_sync.pt")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Two gloo processes (full run, paused + resumed run), and single-process runs with the same global batch."""
    tmp = tmp_path_factory.mktemp("ddp")
    torch.manual_seed(5)
    teacher = tmp / "teacher.pth"
    import timm

    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), teacher)
    mp.spawn(_worker, args=(2, _free_port(), str(tmp), str(teacher)), nprocs=2, join=True)
    single = Trainer(load_config(None, _values(tmp / "single", teacher)), datasets=_datasets())
    single_history = single.fit().history
    accumulated = Trainer(load_config(None, _values(tmp / "accum", teacher, grad_accum_steps=2)), datasets=_datasets())
    accumulated.fit()
    ddp = torch.load(tmp / "ddp_rank0.pt", weights_only=True)
    return {
        "ddp": ddp,
        "sync": torch.load(tmp / "ddp_sync.pt", weights_only=True),
        "single": _states(single),
        "single_history": single_history,
        "accumulated": _states(accumulated),
        "tmp": tmp,
    }


def _assert_close(a, b, rtol, atol):
    for part in ("student", "branches", "ema"):
        assert a[part].keys() == b[part].keys()
        for key in a[part]:
            difference = float((a[part][key].double() - b[part][key].double()).abs().max())
            assert torch.allclose(a[part][key], b[part][key], rtol=rtol, atol=atol), f"{part}.{key}: {difference}"
    assert a["step"] == b["step"]


def test_ddp_equals_single_process_training_with_the_same_global_batch(runs, one_thread):
    # 2 epochs x 4 steps of SGD (Nesterov, lr 0.05): the weights move by up to 0.25; float32 sums in another order
    # leave differences of about 1e-7 (SGD is linear in the gradient; Adam would amplify them where v is tiny)
    _assert_close(runs["ddp"]["full"], runs["single"], rtol=1e-5, atol=1e-6)
    assert runs["single"]["step"] == 8
    # the epoch metrics are reduced over both processes: the loss and the validation over all 12 images
    for ddp_record, single_record in zip(runs["ddp"]["history"], runs["single_history"]):
        assert ddp_record["val"]["n"] == single_record["val"]["n"] == 12
        assert ddp_record["val"]["top1"] == pytest.approx(single_record["val"]["top1"])
        assert ddp_record["train"]["loss"] == pytest.approx(single_record["train"]["loss"], rel=1e-5)


def test_gradient_accumulation_equals_the_full_batch(runs, one_thread):
    _assert_close(runs["accumulated"], runs["single"], rtol=1e-5, atol=1e-6)


def test_ddp_ranks_stay_identical_and_resume_is_exact(runs, one_thread):
    assert runs["sync"]["ranks_equal"]
    full, resumed = runs["ddp"]["full"], runs["ddp"]["resumed"]
    for part in ("student", "branches", "ema"):
        assert all(torch.equal(full[part][k], resumed[part][k]) for k in full[part]), part
    assert full["step"] == resumed["step"] == 8


def test_only_rank_0_wrote_and_every_file_is_there(runs):
    run_dir = runs["tmp"] / "ddp_full"
    names = sorted(p.name for p in run_dir.iterdir())
    assert names == [
        "best.pth", "best_ema.pth", "cka_provenance.json", "cka_to_teacher.png", "config.json", "last.pth",
        "metrics.jsonl", "summary.csv",
    ]  # fmt: skip
    log = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert all(set(record["cka_to_teacher"]) == {"n", "student", "ema"} for record in log)  # measured by rank 0
    rows = (run_dir / "summary.csv").read_text().splitlines()
    assert len(rows) == 3  # header and one row per epoch, written once


@pytest.mark.parametrize(
    ("batch", "world", "accum", "message"),
    [
        (10, 4, 1, r"batch_size 10 \(the global batch\) does not split over 4 process\(es\) x 1 .*number of processes"),
        (8, 3, 1, r"does not split over 3 process\(es\)"),
        (8, 2, 3, r"x 3 accumulation step\(s\); set grad_accum_steps .*\(e\.g\. 1\)"),
    ],
)
def test_a_global_batch_that_does_not_split_is_refused(batch, world, accum, message):
    with pytest.raises(ConfigError, match=message):
        local_batch_size(batch, world, accum)
    assert local_batch_size(1024, 8, 2) == 64


def test_sync_bn_on_cpu_processes_is_refused_before_any_collective(tmp_path, monkeypatch):
    from cka_probe.ofa import trainer as trainer_module
    from cka_probe.ofa.distributed import DistInfo

    monkeypatch.setattr(
        trainer_module, "init_distributed", lambda device: (DistInfo(rank=0, world_size=2, local_world_size=2), device)
    )
    config = load_config(None, _values(tmp_path, tmp_path / "unused.pth", method="scratch", sync_bn=True))
    with pytest.raises(
        ConfigError, match="sync_bn needs CUDA devices .SyncBatchNorm.; on CPUs use --set sync_bn=false"
    ):
        Trainer(config, datasets=_datasets())


def test_place_in_the_run_from_torchrun_or_slurm_variables(monkeypatch):
    from cka_probe.ofa.distributed import DistInfo, dist_info

    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS",
                 "SLURM_LOCALID", "SLURM_NTASKS_PER_NODE"):  # fmt: skip
        monkeypatch.delenv(name, raising=False)
    assert dist_info() == DistInfo(0, 1, 0, 1)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "16")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "8")
    assert dist_info() == DistInfo(rank=5, world_size=16, local_rank=1, local_world_size=8)
    monkeypatch.setenv("RANK", "3")  # torchrun's variables win over SLURM's
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "3")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "4")
    assert dist_info() == DistInfo(rank=3, world_size=4, local_rank=3, local_world_size=4)
    monkeypatch.setenv("RANK", "x")
    with pytest.raises(ConfigError, match="RANK='x' is not an integer"):
        dist_info()
