"""``cka-probe validate``: top-1 / top-5 of a student, EMA or teacher checkpoint on a validation set."""

from __future__ import annotations

import click

from .._choices import TRAIN_DATASETS
from . import _options as opt
from ._options import report_errors


@click.command("validate")
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--data", "data_dir", default=None, help="Data folder [default: the run's own data_dir].")
@click.option(
    "--dataset",
    type=click.Choice(TRAIN_DATASETS),
    default=None,
    help="Data set layout [default: the run's, else imagenet].",
)
@click.option("--model", default=None, help="Model name, for checkpoints that do not record it (e.g. a teacher's).")
@opt.checkpoint_key_option()
@click.option(
    "--num-classes",
    type=click.IntRange(min=1),
    default=None,
    help="Classifier size [default: read from the checkpoint].",
)
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=128, show_default=True, help="Images per forward pass."
)
@click.option(
    "--num-images", type=click.IntRange(min=1), default=None, help="Evaluate a fixed subset of this many images."
)
@click.option(
    "--img-size", type=click.IntRange(min=1), default=None, help="Resolution [default: the run's or the model's]."
)
@click.option(
    "--workers",
    type=click.IntRange(min=0),
    default=None,
    help="Data-loading processes [default: the CPU cores available].",
)
@opt.DEVICE
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@report_errors
def validate(
    checkpoint, data_dir, dataset, model, checkpoint_key, num_classes, batch_size, num_images, img_size, workers,
    device, verbose,
) -> None:  # fmt: skip
    """Evaluate CHECKPOINT (a cka-probe run's, an official OFA-KD one, or a state dict with --model)."""
    from ..ofa.validate import validate_checkpoint

    result = validate_checkpoint(
        checkpoint,
        data_dir=data_dir,
        dataset=dataset,
        model=model,
        checkpoint_select=checkpoint_key,
        num_classes=num_classes,
        batch_size=batch_size,
        device=device,
        workers=workers,
        samples=num_images,
        img_size=img_size,
    )
    key = f" [{result['checkpoint_key']}]" if result["checkpoint_key"] else ""
    click.echo(
        f"{result['model']}{key} on {result['dataset']} ({result['n']} images): top-1 {result['top1']:.2f}%, "
        f"top-5 {result['top5']:.2f}%, loss {result['loss']:.4f}"
    )
