"""``cka-probe models [PATTERN]``: aliases and timm model names."""

from __future__ import annotations

import click

from ._options import report_errors


@click.command("models")
@click.argument("pattern", required=False)
@click.option("-v", "--verbose", is_flag=True, help="Show tracebacks on errors.")
@report_errors
def models(pattern, verbose):
    """List the model aliases and timm names matching PATTERN (a glob such as 'vit_*')."""
    from ..errors import UnknownModelError
    from ..models import ALIASES, list_models

    names = list_models(pattern)
    if not names:
        raise UnknownModelError(
            f"no model name matches {pattern!r}; widen the pattern (e.g. 'vit_*' or '*resnet*'), "
            "or run cka-probe models without one to list them all"
        )
    for name in names:
        if name in ALIASES:
            spec = ALIASES[name]
            click.echo(f"{name:<16} -> {spec[0]} ({spec[1]})")
        else:
            click.echo(name)
