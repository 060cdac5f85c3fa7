"""``cka-probe zoo CONFIG``: CKA of every pair of a list of models, one forward pass per model, resumable."""

from __future__ import annotations

import click

from .._choices import EXECUTORS, LABELS, one_of
from . import _options as opt
from ._options import report_errors


@click.command("zoo")
@click.argument("config", type=click.Path(dir_okay=False))
@opt.CONFIG_SETS
@opt.CONFIG_OUT
@click.option(
    "--executor",
    type=click.Choice(EXECUTORS),
    default="local",
    show_default=True,
    help="local: models one after another here; ray: one Ray task per model.",
)
@click.option("--address", default=None, help="Ray cluster address (default: start a local Ray instance).")
@click.option(
    "--permutations",
    type=click.IntRange(min=0),
    default=None,
    help="Permutation-test draws per pair (p-value per cell).",
)
@click.option(
    "--bootstrap",
    type=click.IntRange(min=0),
    default=None,
    help="Bootstrap resamples per pair (percentile interval per cell).",
)
@click.option(
    "--labels",
    type=click.Choice(opt.LABEL_CHOICES),
    default=None,
    help=f"Per-pair heatmap axes: {one_of(LABELS)} [default: the config's output.labels].",
)
@opt.run_options
@report_errors
def zoo(
    config,
    sets,
    out,
    executor,
    address,
    permutations,
    bootstrap,
    labels,
    cache_dir,
    no_cache,
    overwrite,
    no_progress,
    verbose,
):
    """Compare every pair of the models CONFIG lists (see configs/zoo/); rerun to resume after a kill."""
    from ..errors import ConfigError
    from ..jobs.config import load_job_config

    if address is not None and executor != "ray":
        raise ConfigError(f"--address {address} applies to the Ray executor; add --executor ray or drop --address")
    overrides = list(sets)
    if permutations is not None:
        overrides.append(f"analysis.permutations={permutations}")
    if bootstrap is not None:
        overrides.append(f"analysis.bootstrap={bootstrap}")
    if labels is not None:
        overrides.append(f"output.labels={labels}")
    job = load_job_config(config, "zoo", overrides)  # checked whole before the library loads

    from ..jobs import run_zoo

    cache = opt.cache_setting(cache_dir, no_cache) if (cache_dir or no_cache) else None
    result = run_zoo(
        job,
        output_dir=out,
        executor=executor,
        ray_address=address,
        cache=cache,
        overwrite=overwrite,
        progress=not no_progress,
    )
    models = result.models
    ok = int((models["status"] == "ok").sum())
    failed = models[models["status"] == "failed"]
    main_files = [
        result.files[key]
        for key in ("pairs_summary.csv", "pairs_long.csv", "models.csv", "zoo_summary.png")
        if key in result.files
    ]
    wrote = ", ".join(str(p) for p in main_files) or str(result.output_dir)
    if result.up_to_date:
        click.echo(
            f"{result.output_dir}: already complete for this configuration ({ok} models, "
            f"{result.manifest['pairs']} pairs); nothing recomputed; see {wrote}"
        )
        return
    cached = int(models["from_cache"].sum())
    note = f"; failed: {', '.join(f'{r.label} ({r.error})' for r in failed.itertuples())}" if len(failed) else ""
    click.echo(
        f"{ok} models ({cached} from the cache), {result.manifest['pairs']} pairs, "
        f"{result.manifest['layers']} layers in {result.manifest['seconds']['total']:.1f} s; "
        f"wrote {wrote}{note}"
    )
