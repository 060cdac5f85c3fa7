"""Options shared by several commands, defined once."""

from __future__ import annotations

import click

KERNEL = click.option("--kernel", type=click.Choice(["linear", "rbf"]), default="linear", show_default=True,
                      help="CKA kernel.")
UNBIASED = click.option("--unbiased", is_flag=True, help="Unbiased HSIC estimator (Song et al. 2012); n >= 4.")
TOKENS = click.option("--tokens", type=click.Choice(["patch", "all", "cls"]), default="patch", show_default=True,
                      help="Token layers: mean over patch tokens (prefix tokens excluded), over all tokens, or the class token.")
DEVICE = click.option("--device", default="auto", show_default=True,
                      help="auto (CUDA when there is a GPU), cpu or cuda; the CKA runs there too.")
SEED = click.option("--seed", type=int, default=0, show_default=True,
                    help="Seed of the image subset and of random weights.")
DATA = click.option("--data", default="embedded", show_default=True,
                    help="embedded | DIR (ImageFolder or flat) | fashion-mnist[:DIR] | imagenette | synthetic.")
NUM_IMAGES = click.option("-n", "--num-images", type=int, default=128, show_default=True,
                          help="Images (a class-balanced, seeded subset).")
BATCH_SIZE = click.option("--batch-size", type=int, default=None,
                          help="Images per forward pass [default: all n in one batch, as in the paper].")
WEIGHTS = click.option("--weights", type=click.Choice(["pretrained", "random"]), default="pretrained", show_default=True,
                       help="timm hub weights, or seeded random initialisation.")
OVERWRITE = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")
VERBOSE = click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
NO_PROGRESS = click.option("--no-progress", is_flag=True, help="Hide progress bars.")


def split_layers(value: str) -> str | list[str]:
    """``activations`` stays a keyword; anything else is a comma-separated list of names or glob patterns."""
    if value == "activations":
        return value
    return [part.strip() for part in value.split(",") if part.strip()]


def split_formats(value: str) -> list[str]:
    return [part.strip().lower() for part in value.split(",") if part.strip()]

CACHE_DIR = click.option("--cache-dir", type=click.Path(file_okay=False), default=None,
                         help="Feature cache directory [default: $CKA_PROBE_CACHE or ~/.cache/cka-probe/features].")
NO_CACHE = click.option("--no-cache", is_flag=True, help="Compute features without reading or writing the cache.")


def cache_setting(cache_dir, no_cache):
    """What the library's ``cache=`` argument gets from --cache-dir / --no-cache."""
    if no_cache:
        return False
    return cache_dir if cache_dir else True

CONFIG_SETS = click.option("--set", "sets", multiple=True,
                           help="Override a config value: section.key=value (repeatable).")
CONFIG_OUT = click.option("--out", type=click.Path(file_okay=False), default=None,
                          help="Output directory [default: the config's output.dir].")


def parse_sets(values) -> dict:
    """``--set key=value`` pairs (values read as YAML scalars: numbers, booleans, null)."""
    import yaml

    from ..errors import CKAProbeError

    pairs = {}
    for item in values:
        if "=" not in item:
            raise CKAProbeError(f"--set {item!r}: write it as section.key=value, e.g. data.n=64")
        key, value = item.split("=", 1)
        pairs[key.strip()] = yaml.safe_load(value)
    return pairs


def run_options(command):
    """The options every compute command ends with: cache, overwrite, progress, verbosity."""
    for option in reversed((CACHE_DIR, NO_CACHE, OVERWRITE, NO_PROGRESS, VERBOSE)):
        command = option(command)
    return command
