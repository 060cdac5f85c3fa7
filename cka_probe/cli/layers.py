"""``cka-probe layers MODEL``: the layers that would be hooked, in forward order."""

from __future__ import annotations

import click

from . import _options as opt
from ._options import report_errors


@click.command("layers")
@click.argument("model")
@opt.LAYERS
@opt.TOKENS
@opt.POOL
@opt.layouts_option()
@click.option(
    "--img-size",
    type=click.IntRange(min=1),
    default=None,
    help="Input resolution [default: a training run's own, else the model's pretrained config's].",
)
@opt.VERBOSE
@report_errors
def layers(model, layer_spec, tokens, pool, layouts, img_size, verbose):
    """List the layers of MODEL that compare would record: name, type, layout, output shape and the
    width of the feature CKA sees (channels when pooled, the flattened activation with --pool flatten).

    The model is built with random weights (the layers do not depend on them) and run once on a
    blank image of its own input size. MODEL may be a training checkpoint (cka-probe train's best.pth):
    it is built as its run trained it, at the run's resolution.
    """
    from ..jobs import describe_model_layers

    rows = describe_model_layers(
        model,
        layers=opt.split_layers(layer_spec),
        tokens=tokens,
        pool=pool,
        layouts=opt.parse_layouts(layouts, "--layouts") or None,
        img_size=img_size,
    )
    width_label = "flattened" if pool == "flatten" else "pooled"
    table = [("#", "layer", "type", "layout", "output", width_label)]
    table += [
        (str(i), row["name"], row["type"], row["layout"], str(tuple(row["output"])), str(row["pooled_dim"]))
        for i, row in enumerate(rows, 1)
    ]
    widths = [max(len(r[c]) for r in table) for c in range(len(table[0]))]
    for r in table:
        cells = [r[0].rjust(widths[0])] + [r[c].ljust(widths[c]) for c in range(1, 5)] + [r[5].rjust(widths[5])]
        click.echo("  ".join(cells).rstrip())
    click.echo(f"{len(rows)} layers")
