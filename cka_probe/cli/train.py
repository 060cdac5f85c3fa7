"""``cka-probe train``: train a student from scratch or distil it (KD, FitNet, One-for-All) from a recipe.

On many GPUs: ``torchrun --nproc_per_node=N -m cka_probe train --config ...`` or ``cka-probe train --nproc N``.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from ._options import report_errors


@click.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML recipe, e.g. configs/ofa/cifar100_cnn.yaml or configs/ofa/official/imagenet_cnn.yaml.",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override one recipe key (value parsed as YAML); repeatable.",
)
@click.option(
    "--resume",
    is_flag=False,
    flag_value="last",
    default=None,
    metavar="[CHECKPOINT]",
    help="Continue a run: from CHECKPOINT, or from OUTPUT_DIR/last.pth when given alone.",
)
@click.option(
    "--cka-every",
    type=click.IntRange(min=0),
    default=None,
    metavar="N",
    help="Measure CKA to the teacher every N epochs (0: off) [default: the recipe's cka_every, 1].",
)
@click.option("--overwrite", is_flag=True, help="Allow writing into an output folder that already holds a run.")
@click.option(
    "--nproc",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Processes on this machine (one per GPU), started through torchrun; batch_size stays the global batch.",
)
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@report_errors
def train(config_path, overrides, resume, cka_every, overwrite, nproc, progress, verbose) -> None:
    """Train the student of a recipe; last/best checkpoints, metrics.jsonl and summary.csv go to its output_dir.

    With a teacher, the CKA of the student's stages to the teacher's is logged in metrics.jsonl every
    --cka-every epochs and drawn in cka_to_teacher.png.
    """
    from ..ofa.config import load_config
    from ..ofa.distributed import check_nproc, dist_info, launch, local_batch_size

    if cka_every is not None:
        overrides = (*overrides, f"cka_every={cka_every}")
    config = load_config(config_path, overrides)
    _check_resume(resume, Path(config.output_dir))
    if nproc != 1 and "WORLD_SIZE" not in os.environ:
        check_nproc(nproc, config.device)  # refuse before starting anything
        local_batch_size(config.batch_size, nproc, config.grad_accum_steps)
        argv = ["train", "--config", config_path, *[arg for item in overrides for arg in ("--set", item)]]
        argv += (["--resume", resume] if resume else []) + (["--overwrite"] if overwrite else [])
        argv += ["--progress" if progress else "--no-progress"] + (["--verbose"] if verbose else [])
        raise SystemExit(launch(nproc, argv, device=config.device))

    from ..ofa.trainer import train as run_training

    is_main = dist_info().is_main
    result = run_training(
        config, resume=resume, overwrite=overwrite, progress=progress, echo=click.echo if is_main else None
    )
    if not is_main:
        return
    final = result.final
    if final:
        val = final["val"]
        click.echo(
            f"{config.method} {config.student}: epoch {final['epoch']}/{config.epochs}, "
            f"top-1 {val['top1']:.2f}%, top-5 {val['top5']:.2f}% -> {result.checkpoint}"
        )
    else:
        click.echo(f"nothing to do: {result.checkpoint} has already completed {config.epochs} epochs")


def _check_resume(resume: str | None, output_dir: Path) -> None:
    """A ``--resume`` checkpoint that is not there is one line naming the option, before anything starts."""
    from ..errors import CheckpointError
    from ..ofa.trainer import CHECKPOINT_NAME

    if resume == "last" and not (output_dir / CHECKPOINT_NAME).is_file():
        raise CheckpointError(
            f"--resume: {output_dir} holds no {CHECKPOINT_NAME} to continue from; drop --resume to start the run, or give "
            "the checkpoint to continue from (--resume PATH)"
        )
    if resume not in (None, "last") and not Path(resume).expanduser().is_file():
        raise CheckpointError(
            f"--resume {resume}: no such checkpoint file; give one of the run's (OUTPUT_DIR/last.pth), or --resume "
            "alone to continue from the recipe's output_dir"
        )
