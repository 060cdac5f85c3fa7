"""``cka-probe compare A B``: CKA heatmap of every recorded layer of A against every layer of B."""

from __future__ import annotations

import click

from . import _options as opt
from ._common import report_errors


@click.command("compare")
@click.argument("model_a")
@click.argument("model_b")
@opt.DATA
@opt.NUM_IMAGES
@opt.BATCH_SIZE
@opt.SEED
@opt.WEIGHTS
@click.option("--checkpoint-a", type=click.Path(dir_okay=False), default=None, help="Local weights for A (.pth, .pt, .safetensors).")
@click.option("--checkpoint-b", type=click.Path(dir_okay=False), default=None, help="Local weights for B.")
@click.option("--layers-a", default="activations", show_default=True, help="activations, or comma-separated module names / glob patterns.")
@click.option("--layers-b", default="activations", show_default=True, help="Same for B.")
@opt.TOKENS
@opt.KERNEL
@opt.UNBIASED
@click.option("--estimator", type=click.Choice(["auto", "full", "minibatch"]), default="auto", show_default=True,
              help="full: CKA over all n; minibatch: Nguyen et al. 2021 over --batch-size batches; auto: minibatch when batches are smaller than n.")
@opt.DEVICE
@click.option("--out", type=click.Path(file_okay=False), default="figures", show_default=True, help="Output directory.")
@click.option("--format", "formats", default="png", show_default=True, help="Figure formats, comma-separated: png,pdf,svg.")
@opt.OVERWRITE
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted in the metadata) instead of failing.")
@opt.CACHE_DIR
@opt.NO_CACHE
@opt.NO_PROGRESS
@opt.VERBOSE
@report_errors
def compare(model_a, model_b, data, num_images, batch_size, seed, weights, checkpoint_a, checkpoint_b, layers_a,
            layers_b, tokens, kernel, unbiased, estimator, device, out, formats, overwrite, skip_bad, cache_dir, no_cache, no_progress, verbose):
    """CKA of every layer of MODEL_A (rows) against every layer of MODEL_B (columns).

    Writes A_vs_B.csv, A_vs_B.json (provenance) and the heatmap under --out.
    """
    from ..analysis import compare as run_compare
    from ..analysis import output_paths, output_stem
    from ..analysis._io import check_outputs, ensure_writable_dir

    fmt = opt.split_formats(formats)
    stem = output_stem(model_a, model_b)
    ensure_writable_dir(out)  # fail before any model runs
    check_outputs(output_paths(out, stem, fmt).values(), overwrite)

    result = run_compare(
        model_a, model_b, data, n=num_images, batch_size=batch_size, seed=seed, weights=weights,
        checkpoint_a=checkpoint_a, checkpoint_b=checkpoint_b, layers_a=opt.split_layers(layers_a),
        layers_b=opt.split_layers(layers_b), tokens=tokens, kernel=kernel, unbiased=unbiased, estimator=estimator,
        device=device, skip_bad=skip_bad, cache=opt.cache_setting(cache_dir, no_cache), progress=not no_progress,
    )
    paths = result.save(out, formats=fmt, stem=stem, overwrite=overwrite)
    rows, cols = result.matrix.shape
    band = result.metadata["summary"]["diagonal_band_mean"]
    files = ", ".join(str(p) for p in paths.values())
    cached = [side for side, hit in result.metadata["seconds"]["features_from_cache"].items() if hit]
    from_cache = f" (features of {' and '.join(cached).upper()} from the cache)" if cached else ""
    click.echo(f"{model_a} vs {model_b}: {rows} x {cols} layers, n={result.metadata['n']}, "
               f"diagonal-band CKA {band:.3f}{from_cache}; wrote {files}")
