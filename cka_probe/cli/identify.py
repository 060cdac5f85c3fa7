"""``cka-probe identify CKPT...``: Kornblith et al.'s layer-identification check on several checkpoints of one architecture."""

from __future__ import annotations

import click
from click.core import ParameterSource

from .._choices import ESTIMATORS, FORMATS, POOLS
from . import _options as opt
from ._options import report_errors

# Options that a --config file also sets; given on the command line, they win over the file.
_CONFIG_KEYS = {
    "model": "model",
    "data": "data",
    "num_images": "n",
    "seed": "seed",
    "batch_size": "batch_size",
    "layer_spec": "layers",
    "tokens": "tokens",
    "pools": "pools",
    "estimator": "estimator",
    "unbiased": "unbiased",
    "precision": "precision",
    "device": "device",
    "skip_bad": "skip_bad",
    "layouts": "layouts",
    "checkpoint_key": "checkpoint_select",
}


@click.command("identify")
@click.argument("checkpoints", nargs=-1)
@click.option(
    "-m",
    "--model",
    default=None,
    help="Architecture of every checkpoint: an alias or timm name [default: the one each checkpoint records].",
)
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="YAML file with model, checkpoints, data and analysis sections (options given here win).",
)
@opt.DATA
@opt.NUM_IMAGES
@opt.BATCH_SIZE
@opt.SEED
@opt.LAYERS
@opt.TOKENS
@opt.layouts_option(whose="every network's layers")
@opt.checkpoint_key_option(
    help="Which weights of training checkpoints: their student or their EMA (auto: the student)."
)
@click.option(
    "--pool",
    "pools",
    default="mean,flatten",
    show_default=True,
    help=f"Poolings to score, comma-separated: {', '.join(POOLS)} (flatten: the whole activation).",
)
@click.option(
    "--estimator",
    type=click.Choice(ESTIMATORS),
    default="full",
    show_default=True,
    help="full: CKA over all n in one batch; minibatch: Nguyen et al. 2021 over --batch-size batches.",
)
@opt.UNBIASED
@opt.PRECISION
@opt.DEVICE
@click.option(
    "--out", type=click.Path(file_okay=False), default="identify", show_default=True, help="Output directory."
)
@click.option("--name", "stem", default="identify", show_default=True, help="File stem of the outputs.")
@click.option(
    "--format",
    "formats",
    default="png",
    show_default=True,
    help=f"Figure formats, comma-separated: {','.join(FORMATS)}.",
)
@opt.OVERWRITE
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images instead of failing.")
@opt.NO_PROGRESS
@opt.VERBOSE
@report_errors
def identify(
    checkpoints,
    model,
    config_file,
    data,
    num_images,
    batch_size,
    seed,
    layer_spec,
    tokens,
    layouts,
    checkpoint_key,
    pools,
    estimator,
    unbiased,
    precision,
    device,
    out,
    stem,
    formats,
    overwrite,
    skip_bad,
    no_progress,
    verbose,
):
    """Is the most similar layer of every other network the corresponding one? (Kornblith et al. 2019)

    CHECKPOINTS are weight files of one architecture (paths or quoted globs such as 'runs/seed*/model.pth'),
    for example trained from different seeds. For each pooling, prints and writes the share of layer
    matches that pick the corresponding layer: STEM.csv (per layer), STEM.json (overall, best matches,
    provenance) and the figure under --out.
    """
    from .._files import check_output_name
    from ..engine._io import check_outputs, new_output_dir
    from ..errors import CKAProbeError
    from ..jobs.identify import identify as run_identify
    from ..jobs.identify import identify_outputs, load_identify_config

    given = {
        "model": model,
        "data": data,
        "n": num_images,
        "seed": seed,
        "batch_size": batch_size,
        "layers": opt.split_layers(layer_spec),
        "tokens": tokens,
        "layouts": opt.parse_layouts(layouts, "--layouts"),
        "checkpoint_select": checkpoint_key,
        "pools": opt.split_pools(pools),
        "estimator": estimator,
        "unbiased": unbiased,
        "precision": precision,
        "device": device,
        "skip_bad": skip_bad,
    }
    if config_file:
        settings = load_identify_config(config_file)
        context = click.get_current_context()
        for param, key in _CONFIG_KEYS.items():
            if context.get_parameter_source(param) == ParameterSource.COMMANDLINE:
                settings[key] = given[key]
        if checkpoints:
            raise CKAProbeError(
                "checkpoints are given both on the command line and in --config; give them in one place"
            )
    else:
        settings = {**given, "checkpoints": list(checkpoints)}  # no --model: each checkpoint's recorded one

    fmt = opt.split_formats(formats)
    check_output_name(stem, "--name")
    with new_output_dir(out):  # fails before any model runs; removed again if nothing is written
        check_outputs(identify_outputs(out, stem, fmt).values(), overwrite)
        result = run_identify(**settings, progress=not no_progress)
        paths = result.save(out, formats=fmt, stem=stem, overwrite=overwrite)
    layers = result.table["position"].nunique()
    click.echo(
        f"{len(result.metadata['networks'])} networks x {layers} layers, n={result.metadata['n']}: "
        f"{result.summary_line()}; wrote {', '.join(str(p) for p in paths.values())}"
    )
