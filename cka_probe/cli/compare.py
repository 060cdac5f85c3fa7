"""``cka-probe compare A B``: CKA heatmap of every recorded layer of A against every layer of B."""

from __future__ import annotations

import click

from .._choices import CHECKPOINT_SUFFIXES, FORMATS
from . import _options as opt
from ._options import report_errors


@click.command("compare")
@click.argument("model_a")
@click.argument("model_b")
@opt.DATA
@opt.NUM_IMAGES
@opt.BATCH_SIZE
@opt.SEED
@click.option(
    "--seed-a",
    type=click.IntRange(min=0),
    default=None,
    help="Random-weights seed of A [default: --seed], e.g. two seeds of one architecture.",
)
@click.option("--seed-b", type=click.IntRange(min=0), default=None, help="Random-weights seed of B [default: --seed].")
@opt.WEIGHTS
@click.option(
    "--checkpoint-a",
    type=click.Path(dir_okay=False),
    default=None,
    help=f"Local weights for A ({', '.join(CHECKPOINT_SUFFIXES)}).",
)
@click.option("--checkpoint-b", type=click.Path(dir_okay=False), default=None, help="Local weights for B.")
@opt.checkpoint_key_option(
    "--checkpoint-key-a", "Weights of A's training checkpoint: its student or its EMA (auto: the student)."
)
@opt.checkpoint_key_option("--checkpoint-key-b", "Same for B.")
@click.option(
    "--num-classes-a",
    type=click.IntRange(min=1),
    default=None,
    help="Classifier size of A [default: the checkpoint's, else ImageNet's 1000].",
)
@click.option("--num-classes-b", type=click.IntRange(min=1), default=None, help="Same for B.")
@click.option(
    "--img-size-a",
    type=click.IntRange(min=1),
    default=None,
    help="Input resolution of A [default: a training run's own, else the model's pretrained config's].",
)
@click.option("--img-size-b", type=click.IntRange(min=1), default=None, help="Same for B.")
@click.option(
    "--layers-a",
    default="activations",
    show_default=True,
    help="activations, or comma-separated module names / glob patterns.",
)
@click.option("--layers-b", default="activations", show_default=True, help="Same for B.")
@opt.TOKENS
@click.option("--tokens-a", type=opt.TOKEN_CHOICE, default=None, help="Token rule of A [default: --tokens].")
@click.option("--tokens-b", type=opt.TOKEN_CHOICE, default=None, help="Token rule of B [default: --tokens].")
@opt.layouts_option("a")
@opt.layouts_option("b")
@opt.POOL
@opt.KERNEL
@opt.UNBIASED
@opt.ESTIMATOR
@opt.PRECISION
@opt.DEVICE
@click.option("--out", type=click.Path(file_okay=False), default="figures", show_default=True, help="Output directory.")
@click.option("--name", default=None, help="Output file stem [default: A_vs_B].")
@click.option(
    "--format",
    "formats",
    default="png",
    show_default=True,
    help=f"Figure formats, comma-separated: {','.join(FORMATS)}.",
)
@opt.LABELS
@opt.OVERWRITE
@click.option("--skip-bad", is_flag=True, help="Skip unreadable images (counted in the metadata) instead of failing.")
@opt.CACHE_DIR
@opt.NO_CACHE
@opt.NO_PROGRESS
@opt.VERBOSE
@report_errors
def compare(
    model_a,
    model_b,
    data,
    num_images,
    batch_size,
    seed,
    seed_a,
    seed_b,
    weights,
    checkpoint_a,
    checkpoint_b,
    checkpoint_key_a,
    checkpoint_key_b,
    num_classes_a,
    num_classes_b,
    img_size_a,
    img_size_b,
    layers_a,
    layers_b,
    tokens,
    tokens_a,
    tokens_b,
    layouts_a,
    layouts_b,
    pool,
    kernel,
    unbiased,
    estimator,
    precision,
    device,
    out,
    name,
    formats,
    labels,
    overwrite,
    skip_bad,
    cache_dir,
    no_cache,
    no_progress,
    verbose,
):
    """CKA of every layer of MODEL_A (rows) against every layer of MODEL_B (columns).

    A model is a name (alias or timm name) or a training checkpoint that records its model
    (cka-probe train's last.pth / best.pth), rebuilt as its run trained it and fed images prepared as
    its run's validation prepared them. Writes A_vs_B.csv, A_vs_B.json (provenance) and the heatmap
    under --out; a checkpoint's side is named by its folder, file and epoch.
    """
    from .._files import check_output_name

    fmt = opt.split_formats(formats)  # the settings a user can get wrong, checked before the library loads
    if name:
        check_output_name(name, "--name")
    layouts = {"a": opt.parse_layouts(layouts_a, "--layouts-a"), "b": opt.parse_layouts(layouts_b, "--layouts-b")}

    from ..engine._io import check_outputs, new_output_dir
    from ..jobs import Side, output_paths, output_stem, side_labels
    from ..jobs import compare as run_compare

    side_a, side_b = (
        Side(model, checkpoint, key, side_seed, classes, size, opt.split_layers(layers), side_tokens, layouts[side])
        for side, model, checkpoint, key, side_seed, classes, size, layers, side_tokens in (
            ("a", model_a, checkpoint_a, checkpoint_key_a, seed_a, num_classes_a, img_size_a, layers_a, tokens_a),
            ("b", model_b, checkpoint_b, checkpoint_key_b, seed_b, num_classes_b, img_size_b, layers_b, tokens_b),
        )
    )  # fmt: skip
    stem = name or output_stem(*side_labels(side_a, side_b))
    with new_output_dir(out) as directory:  # fails before any model runs; removed again if nothing is written
        check_outputs(output_paths(directory, stem, fmt).values(), overwrite)
        result = run_compare(
            side_a,
            side_b,
            data,
            n=num_images,
            batch_size=batch_size,
            seed=seed,
            weights=weights,
            tokens=tokens,
            pool=pool,
            kernel=kernel,
            unbiased=unbiased,
            estimator=estimator,
            precision=precision,
            device=device,
            skip_bad=skip_bad,
            cache=opt.cache_setting(cache_dir, no_cache),
            progress=not no_progress,
        )
        paths = result.save(directory, formats=fmt, stem=stem, overwrite=overwrite, labels=labels)
    rows, cols = result.matrix.shape
    band = result.metadata["summary"]["diagonal_band_mean"]
    files = ", ".join(str(p) for p in paths.values())
    cached = [side for side, hit in result.metadata["seconds"]["features_from_cache"].items() if hit]
    from_cache = f" (features of {' and '.join(side.upper() for side in cached)} from the cache)" if cached else ""
    click.echo(
        f"{result.name_a} vs {result.name_b}: {rows} x {cols} layers, n={result.metadata['n']}, "
        f"diagonal-band CKA {band:.3f}{from_cache}; wrote {files}"
    )
