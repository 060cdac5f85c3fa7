"""What the commands share, defined once: options (their choices built from :mod:`cka_probe._choices`),
value parsing, and the reporting of errors as one line with exit code 2."""

from __future__ import annotations

import functools
import sys
import traceback

import click

from .._choices import (
    CHECKPOINT_SELECT,
    DEVICE_PATTERN,
    DEVICES,
    ESTIMATORS,
    FORMATS,
    KERNELS,
    LABELS,
    POOLS,
    PRECISIONS,
    TOKENS,
    WEIGHTS,
    one_of,
)
from ..errors import CKAProbeError

EXIT_USAGE = 2
EXIT_BROKEN_PIPE = 1  # click's exit code when stdout's reader went away (it ends the command quietly)


def _device(ctx, param, value):
    if value is not None and not DEVICE_PATTERN.match(value):
        raise click.BadParameter(f"{value!r} is not {one_of(DEVICES)}")
    return value


KERNEL = click.option("--kernel", type=click.Choice(KERNELS), default="linear", show_default=True, help="CKA kernel.")
UNBIASED = click.option("--unbiased", is_flag=True, help="Unbiased HSIC estimator (Song et al. 2012); n >= 4.")
ESTIMATOR = click.option(
    "--estimator",
    type=click.Choice(ESTIMATORS),
    default="full",
    show_default=True,
    help="full: CKA over all n images at once (batching does not change it); minibatch: Nguyen et al. 2021 "
    "over --batch-size batches.",
)
PRECISION = click.option(
    "--precision",
    type=click.Choice(PRECISIONS),
    default="float64",
    show_default=True,
    help="Arithmetic of the Grams (those of --pool flatten too) and the all-pairs CKA product: float64, or "
    "float32 for speed (full estimator; error about 1e-7).",
)
POOL = click.option(
    "--pool",
    type=click.Choice(POOLS),
    default="mean",
    show_default=True,
    help="mean / max over positions (channels kept; the paper's is mean), or flatten: the whole activation.",
)
TOKENS_HELP = "Token layers: mean over patch tokens (prefix tokens excluded), over all tokens, or the class token."
TOKEN_CHOICE = click.Choice(TOKENS)
TOKENS = click.option("--tokens", type=TOKEN_CHOICE, default="patch", show_default=True, help=TOKENS_HELP)
DEVICE = click.option(
    "--device",
    default="auto",
    show_default=True,
    callback=_device,
    help=f"{one_of(DEVICES)} (auto: CUDA when there is a GPU); the CKA runs there too.",
)
SEED = click.option(
    "--seed",
    type=click.IntRange(min=0),
    default=0,
    show_default=True,
    help="Seed of the image subset and of random weights.",
)
DATA = click.option(
    "--data",
    default="embedded",
    show_default=True,
    help="embedded | DIR (ImageFolder or flat) | fashion-mnist[:DIR] | imagenette | synthetic.",
)
NUM_IMAGES = click.option(
    "-n",
    "--num-images",
    type=click.IntRange(min=2),
    default=128,
    show_default=True,
    help="Images (a class-balanced, seeded subset).",
)
BATCH_SIZE = click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=None,
    help="Images per forward pass [default: all n in one batch, as in the paper].",
)
WEIGHTS = click.option(
    "--weights",
    type=click.Choice(WEIGHTS),
    default="pretrained",
    show_default=True,
    help="timm hub weights, or seeded random initialisation.",
)
LAYERS = click.option(
    "--layers",
    "layer_spec",
    default="activations",
    show_default=True,
    help="activations, or comma-separated module names / glob patterns.",
)
LABEL_CHOICES = LABELS
LABELS = click.option(
    "--labels",
    type=click.Choice(LABEL_CHOICES),
    default="auto",
    show_default=True,
    help="Heatmap axes: layer names, 1-based layer numbers, or names when they fit.",
)
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
VERBOSE = click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
NO_PROGRESS = click.option("--no-progress", is_flag=True, help="Hide progress bars.")
CACHE_DIR = click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Feature cache directory [default: $CKA_PROBE_CACHE/features or ~/.cache/cka-probe/features].",
)
NO_CACHE = click.option("--no-cache", is_flag=True, help="Compute features without reading or writing the cache.")
CONFIG_SETS = click.option(
    "--set",
    "sets",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a config value: section.key=value, read as YAML (repeatable).",
)
CONFIG_OUT = click.option(
    "--out", type=click.Path(file_okay=False), default=None, help="Output directory [default: the config's output.dir]."
)


def layouts_option(side: str | None = None, whose: str = ""):
    """``--layouts-a`` / ``--layouts-b`` of one side of compare, or ``--layouts`` (``side=None``)."""
    whose = whose or (f"{side.upper()}'s layers" if side else "the layers")
    return click.option(
        f"--layouts-{side}" if side else "--layouts",
        multiple=True,
        metavar="PATTERN=LAYOUT",
        help=f"Layout of {whose} matching PATTERN (NCHW, NHWC, NLC, NCL, NC); repeatable.",
    )


def checkpoint_key_option(flag: str = "--checkpoint-key", help: str = "") -> click.Option:  # noqa: A002
    """Which weights of a training checkpoint: ``auto`` (the student), ``student`` or ``ema``."""
    return click.option(
        flag,
        type=click.Choice(CHECKPOINT_SELECT),
        default="auto",
        show_default=True,
        help=help or "Which weights of a training checkpoint: the student or its EMA (auto: the student).",
    )


def split_layers(value: str) -> str | list[str]:
    """``activations`` stays a keyword; anything else is a comma-separated list of names or glob patterns."""
    if value == "activations":
        return value
    return [part.strip() for part in value.split(",") if part.strip()]


def split_formats(value: str) -> list[str]:
    """``png,pdf`` as a list, each checked here, before the library (and its imports) load; at least one (as the
    job configs' ``output.formats``: an empty value is a mistake, not a way to skip the figure)."""
    formats = [part.strip().lower() for part in value.split(",") if part.strip()]
    if not formats:
        raise CKAProbeError(f"--format {value!r} names no figure format; give one or more of {', '.join(FORMATS)}")
    unknown = [fmt for fmt in formats if fmt not in FORMATS]
    if unknown:
        raise CKAProbeError(f"--format: unknown figure format {unknown[0]!r}; choose from {', '.join(FORMATS)}")
    return formats


class PoolList(click.Choice):
    """Poolings as one comma-separated value (``mean,flatten``), each one of ``POOLS``: a tuple, each pooling once."""

    def __init__(self) -> None:
        super().__init__(POOLS, case_sensitive=False)

    def get_metavar(self, param, ctx=None) -> str:
        return "[" + "|".join(self.choices) + "],..."

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = [part.strip() for part in str(value).split(",") if part.strip()]
        if not parts:
            self.fail(f"{value!r} names no pooling; give one or more of {', '.join(self.choices)}", param, ctx)
        return tuple(dict.fromkeys(super(PoolList, self).convert(part, param, ctx) for part in parts))


def parse_layouts(values, option: str) -> dict[str, str]:
    """``PATTERN=LAYOUT`` strings as an ordered ``{pattern: layout}`` mapping (the first match wins)."""
    from ..capture import parse_layouts as parse

    return parse(values, option)


def cache_setting(cache_dir, no_cache):
    """What the library's ``cache=`` argument gets from --cache-dir / --no-cache."""
    if no_cache:
        return False
    return cache_dir if cache_dir else True


def run_options(command):
    """The options every compute command ends with: cache, overwrite, progress, verbosity."""
    for option in reversed((CACHE_DIR, NO_CACHE, OVERWRITE, NO_PROGRESS, VERBOSE)):
        command = option(command)
    return command


def report_errors(func):
    """Turn a :class:`CKAProbeError` (or ``OSError``) into one line on stderr and exit code 2.

    The traceback, and the ``details`` an error carries (what Ray printed while connecting), are printed only
    when the command was given ``--verbose``.
    """

    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        verbose = bool(kwargs.get("verbose")) or bool(click.get_current_context().find_root().params.get("verbose"))
        try:
            return func(*args, **kwargs)
        except BrokenPipeError:
            raise  # the reader of stdout went away: the entry point ends quietly
        except (CKAProbeError, OSError) as exc:
            if verbose:
                traceback.print_exc(file=sys.stderr)
                if getattr(exc, "details", ""):  # what a tool printed meanwhile (Ray's log), kept out of plain runs
                    click.echo(exc.details.rstrip(), err=True)
            click.echo(f"Error: {one_line(exc)}", err=True)
            sys.exit(EXIT_USAGE)

    return wrapper


def one_line(exc: BaseException | str) -> str:
    text = exc if isinstance(exc, str) else (str(exc) or type(exc).__name__)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return " ".join(lines) if lines else type(exc).__name__
