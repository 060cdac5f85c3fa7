"""Many devices through PyTorch's own engine: ``torchrun`` (or SLURM's ``srun``) environments, batch split, launch.

A run is distributed when ``WORLD_SIZE`` > 1 in the environment, as ``torchrun`` sets it (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``, ``MASTER_PORT``). Under ``srun`` without ``torchrun``,
``SLURM_PROCID``, ``SLURM_LOCALID`` and ``SLURM_NTASKS`` stand in for them (``MASTER_ADDR`` /
``MASTER_PORT`` must then be exported by the job script). The process group uses NCCL on GPUs and
gloo on CPUs.

The recipe's ``batch_size`` is the global batch: ``world_size * grad_accum_steps`` micro-batches of
``batch_size / (world_size * grad_accum_steps)`` images make one optimiser step.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import ConfigError, DeviceError

__all__ = [
    "DistInfo",
    "default_workers",
    "dist_info",
    "init_distributed",
    "launch",
    "local_batch_size",
]


@dataclass(frozen=True)
class DistInfo:
    """Where this process sits in a run: ``rank`` of ``world_size``, ``local_rank`` on its machine."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes files and prints."""
        return self.rank == 0


def _env_int(*names: str, default: int) -> int:
    for name in names:
        value = os.environ.get(name)
        if value not in (None, ""):
            try:
                return int(value)
            except ValueError:
                raise ConfigError(
                    f"environment variable {name}={value!r} is not an integer; fix the launcher"
                ) from None
    return default


def dist_info() -> DistInfo:
    """This process's place, from the initialised process group or the torchrun / SLURM environment."""
    if dist.is_available() and dist.is_initialized():
        world = dist.get_world_size()
        return DistInfo(
            rank=dist.get_rank(),
            world_size=world,
            local_rank=_env_int("LOCAL_RANK", "SLURM_LOCALID", default=0),
            local_world_size=_env_int("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", default=world),
        )
    world = _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)
    return DistInfo(
        rank=_env_int("RANK", "SLURM_PROCID", default=0),
        world_size=world,
        local_rank=_env_int("LOCAL_RANK", "SLURM_LOCALID", default=0),
        local_world_size=_env_int("LOCAL_WORLD_SIZE", "SLURM_NTASKS_PER_NODE", default=world),
    )


def init_distributed(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when the environment says the run is distributed; return its place and device.

    On CUDA each process takes the GPU of its local rank. A process group initialised by the caller
    is used as it is.
    """
    info = dist_info()
    if not info.distributed:
        return info, device
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if info.local_rank >= count:
            raise DeviceError(
                f"local rank {info.local_rank} has no GPU: this machine has {count}; start at most {count} "
                "processes per machine (--nproc / --nproc_per_node)"
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        for name, value in (
            ("RANK", info.rank),
            ("WORLD_SIZE", info.world_size),
            ("LOCAL_RANK", info.local_rank),
        ):
            os.environ.setdefault(name, str(value))
        if "MASTER_ADDR" not in os.environ or "MASTER_PORT" not in os.environ:
            raise ConfigError(
                "a distributed run needs MASTER_ADDR and MASTER_PORT; start it with torchrun, or export them in the "
                "SLURM job script"
            )
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist_info(), device


def local_batch_size(batch_size: int, world_size: int, grad_accum_steps: int) -> int:
    """Images per micro-batch per process: ``batch_size / (world_size * grad_accum_steps)``, which must be whole.

    Example:
        >>> local_batch_size(1024, 8, 2)
        64
    """
    parts = world_size * grad_accum_steps
    if batch_size % parts:
        fits = [k for k in range(1, batch_size + 1) if batch_size % (world_size * k) == 0][:1]
        hint = f"set grad_accum_steps so that batch_size divides evenly (e.g. {fits[0]})" if fits else ""
        if world_size > 1 and not fits:
            hint = "use a number of processes that divides batch_size"
        raise ConfigError(
            f"batch_size {batch_size} (the global batch) does not split over {world_size} process(es) x "
            f"{grad_accum_steps} accumulation step(s); {hint or 'change batch_size or grad_accum_steps'}"
        )
    return batch_size // parts


def default_workers(local_world_size: int = 1) -> int:
    """Data-loading workers per process: the CPU cores this process may use, shared among the processes here."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    return max(1, cores // max(1, local_world_size))


def available_devices(device: str) -> tuple[str, int]:
    """What ``--nproc`` processes would run on: ``("GPU", count)`` for CUDA devices, else ``("CPU core", count)``."""
    wants_cuda = device.startswith("cuda") or (device == "auto" and torch.cuda.is_available())
    if wants_cuda:
        return "GPU", torch.cuda.device_count() if torch.cuda.is_available() else 0
    return "CPU core", os.cpu_count() or 1


def check_nproc(nproc: int, device: str = "auto") -> None:
    """Refuse ``--nproc`` below 1 or beyond the GPUs (CPU cores for a CPU run) of this machine."""
    kind, count = available_devices(device)
    if nproc < 1:
        raise DeviceError(f"--nproc must be at least 1, got {nproc}")
    if nproc > count:
        raise DeviceError(
            f"--nproc {nproc} exceeds the {count} {kind}(s) of this machine; use --nproc {count} or fewer"
        )


def launch(nproc: int, argv: Sequence[str], device: str = "auto") -> int:
    """Run ``python -m cka_probe <argv>`` in ``nproc`` processes on this machine through ``torchrun``.

    Args:
        nproc: Processes (one per GPU; on CPU, gloo processes).
        argv: The ``cka-probe`` arguments (without ``--nproc``).
        device: The recipe's ``device``, deciding which devices are counted.

    Returns:
        torchrun's exit code.

    Raises:
        DeviceError: ``nproc`` exceeds the devices there are.
    """
    check_nproc(nproc, device)
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
        "-m", "cka_probe", *argv,
    ]  # fmt: skip
    return subprocess.call(command)
