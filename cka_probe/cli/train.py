"""``cka-probe train``: train a student from scratch or distil it (KD, FitNet, One-for-All) from a recipe."""

from __future__ import annotations

import click

from ._options import report_errors


@click.command("train")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(dir_okay=False),
    help="YAML recipe, e.g. configs/ofa/cifar100_cnn.yaml.",
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
@click.option("--overwrite", is_flag=True, help="Allow writing into an output folder that already holds a run.")
@click.option("--progress/--no-progress", default=True, show_default=True, help="Show progress bars.")
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@report_errors
def train(config_path, overrides, resume, overwrite, progress, verbose) -> None:
    """Train the student of a recipe; checkpoints and metrics.jsonl go to its output_dir."""
    from ..ofa.config import load_config
    from ..ofa.trainer import train as run_training

    config = load_config(config_path, overrides)
    result = run_training(config, resume=resume, overwrite=overwrite, progress=progress)
    final = result.final
    if final:
        val = final["val"]
        click.echo(
            f"{config.method} {config.student}: epoch {final['epoch']}/{config.epochs}, "
            f"top-1 {val['top1']:.2f}%, top-5 {val['top5']:.2f}% -> {result.checkpoint}"
        )
    else:
        click.echo(f"nothing to do: {result.checkpoint} has already completed {config.epochs} epochs")
