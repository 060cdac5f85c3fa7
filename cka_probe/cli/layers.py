"""``cka-probe layers MODEL``: the layers that would be hooked, in forward order."""

from __future__ import annotations

import click

from . import _options as opt
from ._options import report_errors


@click.command("layers")
@click.argument("model")
@click.option("--layers", "layer_spec", default="activations", show_default=True,
              help="activations, or comma-separated module names / glob patterns.")
@opt.TOKENS
@opt.VERBOSE
@report_errors
def layers(model, layer_spec, tokens, verbose):
    """List the layers of MODEL that compare would record: name, type, layout and pooled width.

    The model is built with random weights (the layers do not depend on them) and run once on a
    blank image of its own input size.
    """
    from ..analysis import describe_model_layers

    rows = describe_model_layers(model, layers=opt.split_layers(layer_spec), tokens=tokens)
    width = max(len(r["name"]) for r in rows)
    click.echo(f"{'#':>4}  {'layer':<{width}}  {'type':<12}  {'layout':<8}  {'output':<18}  pooled")
    for i, row in enumerate(rows, 1):
        click.echo(f"{i:>4}  {row['name']:<{width}}  {row['type']:<12}  {row['layout']:<8}  "
                   f"{str(tuple(row['output'])):<18}  {row['pooled_dim']}")
    click.echo(f"{len(rows)} layers")
