"""``cka-probe figure CONFIG``: a grid of CKA heatmaps (e.g. the supplementary's Figure 6) from a YAML config."""

from __future__ import annotations

import click

from .._choices import LABELS, one_of
from . import _options as opt
from ._options import report_errors


@click.command("figure")
@click.argument("config", type=click.Path(dir_okay=False))
@opt.CONFIG_SETS
@opt.CONFIG_OUT
@click.option("--name", default=None, help="Output file stem [default: the config's output.name, else its file name].")
@click.option(
    "--labels",
    type=click.Choice(opt.LABEL_CHOICES),
    default=None,
    help=f"Heatmap axes: {one_of(LABELS)} [default: the config's output.labels].",
)
@opt.run_options
@report_errors
def figure(config, sets, out, name, labels, cache_dir, no_cache, overwrite, no_progress, verbose):
    """Draw the grid of CKA heatmaps that CONFIG describes (see configs/figure6.yaml)."""
    from pathlib import Path

    from ..jobs.config import load_job_config

    overrides = list(sets) + ([f"output.name={name}"] if name else []) + ([f"output.labels={labels}"] if labels else [])
    job = load_job_config(config, "figure", overrides)  # checked whole before the library loads

    from ..engine._io import check_outputs, new_output_dir
    from ..jobs import figure_paths, make_figure

    with new_output_dir(Path(out or job.output.dir)):  # fails before any model runs
        check_outputs(figure_paths(job, out).values(), overwrite)
        cache = opt.cache_setting(cache_dir, no_cache) if (cache_dir or no_cache) else None
        result = make_figure(job, progress=not no_progress, cache=cache)
        paths = result.save(out, overwrite=overwrite)
    cached = sum(result.metadata["features_from_cache"].values())
    click.echo(
        f"{len(result.tables)} panels over {len(result.metadata['models'])} models "
        f"({cached} from the cache), n={result.metadata['n']}; wrote {', '.join(str(p) for p in paths.values())}"
    )
