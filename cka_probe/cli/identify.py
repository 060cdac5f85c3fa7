"""``cka-probe identify CKPT...``: Kornblith et al.'s layer-identification check on several checkpoints of one architecture."""

from __future__ import annotations

import click
from click.core import ParameterSource

from .._choices import ESTIMATORS, FORMATS
from . import _options as opt
from ._options import report_errors

# The config key (--set KEY=VALUE, or the --config file) that each option sets.
_CONFIG_KEYS = {
    "model": "model",
    "data": "data.source",
    "num_images": "data.n",
    "seed": "data.seed",
    "batch_size": "data.batch_size",
    "skip_bad": "data.skip_bad",
    "layer_spec": "analysis.layers",
    "tokens": "analysis.tokens",
    "layouts": "analysis.layouts",
    "checkpoint_key": "analysis.checkpoint_key",
    "pools": "analysis.pools",
    "estimator": "analysis.estimator",
    "unbiased": "analysis.unbiased",
    "precision": "analysis.precision",
    "device": "analysis.device",
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
@opt.CONFIG_SETS
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
    type=opt.PoolList(),
    default="mean,flatten",
    show_default=True,
    help="Poolings to score, comma-separated (flatten: the whole activation).",
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
    sets,
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
    from .._config import parse_overrides
    from .._files import check_output_name
    from ..engine._io import check_outputs, new_output_dir
    from ..errors import CKAProbeError
    from ..jobs.identify import identify as run_identify
    from ..jobs.identify import identify_outputs, load_identify_config, parse_identify_config

    values = {
        "model": model,
        "data": data,
        "num_images": num_images,
        "seed": seed,
        "batch_size": batch_size,
        "skip_bad": skip_bad,
        "layer_spec": opt.split_layers(layer_spec),
        "tokens": tokens,
        "layouts": opt.parse_layouts(layouts, "--layouts"),
        "checkpoint_key": checkpoint_key,
        "pools": list(pools),
        "estimator": estimator,
        "unbiased": unbiased,
        "precision": precision,
        "device": device,
    }
    # The file (or, without one, the options' defaults), then --set, then the options given here.
    context = click.get_current_context()
    given = {p for p in _CONFIG_KEYS if context.get_parameter_source(p) == ParameterSource.COMMANDLINE}
    overrides = {} if config_file else {_CONFIG_KEYS[p]: values[p] for p in _CONFIG_KEYS if p not in given}
    overrides.update(parse_overrides(sets))
    overrides.update({_CONFIG_KEYS[p]: values[p] for p in _CONFIG_KEYS if p in given})
    if config_file:
        settings = load_identify_config(config_file, overrides)
        if checkpoints:
            raise CKAProbeError(
                "checkpoints are given both on the command line and in --config; give them in one place"
            )
    else:
        if not checkpoints:
            raise CKAProbeError(
                "identify needs at least two checkpoints of one architecture, got none; pass their paths or a glob, "
                "or --config FILE"
            )
        from ..engine.estimation import FLAGS
        from ..jobs.identify import IDENTIFY_KEYS

        names = IDENTIFY_KEYS if sets else FLAGS  # the options alone: their messages name the options
        settings = parse_identify_config({"checkpoints": list(checkpoints)}, overrides, "--set", names)

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
