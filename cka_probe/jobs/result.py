"""The result of one comparison: a labelled CKA table and its provenance, saved as CSV, JSON and figures."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from .._choices import FORMATS
from .._files import check_output_name
from ..engine._io import atomic_paths, check_outputs, ensure_writable_dir, safe_name
from ..errors import CKAProbeError
from .summary import DEFAULT_BAND, diagonal_band_mean

__all__ = ["CKAResult", "check_formats", "output_paths", "output_stem", "FIGURE_FORMATS"]

FIGURE_FORMATS = FORMATS


def output_stem(name_a: str, name_b: str) -> str:
    """File stem ``A_vs_B`` of a comparison's outputs.

    >>> output_stem("mobilenetv2", "hf-hub:org/model")
    'mobilenetv2_vs_hf-hub_org_model'
    """
    return f"{safe_name(name_a)}_vs_{safe_name(name_b)}"


def check_formats(formats, option: str = "--format") -> list[str]:
    """Figure formats as a list, each one of :data:`FIGURE_FORMATS` (a string is one format, not letters)."""
    formats = [formats] if isinstance(formats, str) else list(formats)
    for fmt in formats:
        if fmt not in FIGURE_FORMATS:
            raise CKAProbeError(f"{option}: unknown figure format {fmt!r}; choose from {', '.join(FIGURE_FORMATS)}")
    return formats


def output_paths(directory: str | Path, stem: str, formats=("png",)) -> dict[str, Path]:
    """Where a result is saved: ``csv``, ``json`` and one entry per figure format (``stem`` is checked)."""
    check_output_name(stem, "output name")
    directory = Path(directory)
    out = {"csv": directory / f"{stem}.csv", "json": directory / f"{stem}.json"}
    for fmt in check_formats(formats):
        out[fmt] = directory / f"{stem}.{fmt}"
    return out


@dataclass
class CKAResult:
    """CKA of every recorded layer of model A (rows) against every layer of model B (columns).

    Attributes:
        matrix: float64 table, index = A's layers in forward order (named after A), columns = B's.
        metadata: provenance: models, weights, data, n, seed, layers, pooling, estimator, versions.
    """

    matrix: pd.DataFrame
    metadata: dict = field(default_factory=dict)

    @property
    def name_a(self) -> str:
        return str(self.matrix.index.name or "A")

    @property
    def name_b(self) -> str:
        return str(self.matrix.columns.name or "B")

    def diagonal_band_mean(self, width: float = DEFAULT_BAND) -> float:
        """Mean CKA of layer pairs at about the same relative depth (see :mod:`cka_probe.jobs.summary`)."""
        return diagonal_band_mean(self.matrix, width)

    def figure_title(self):
        """Headline (``A vs B``) and subtitle (weights, data, n) of this result's figure, from its metadata
        (see :func:`cka_probe.plots.figure_title`)."""
        from ..plots.titles import figure_title

        return figure_title(self.metadata, title=f"{self.name_a} vs {self.name_b}")

    def title(self) -> str:
        """The figure's title as one string: headline, a line break, then weights, data and n."""
        return str(self.figure_title())

    def __repr__(self) -> str:
        """One line: the two models and their layer counts, the headline score, n and the weights.

        >>> import numpy as np, pandas as pd
        >>> matrix = pd.DataFrame(np.eye(3), index=pd.Index(list("abc"), name="resnet18"),
        ...                       columns=pd.Index(list("xyz"), name="vit_t"))
        >>> CKAResult(matrix, {"n": 128, "weights": {"a": "random", "b": "random"}})
        CKAResult(resnet18 3 layers x vit_t 3 layers, diagonal band 1.000, n=128, random weights)
        """
        from ..plots.titles import weights_text

        band = (self.metadata.get("summary") or {}).get("diagonal_band_mean")
        band = self.diagonal_band_mean() if band is None else float(band)
        rows, cols = self.matrix.shape
        n = self.metadata.get("n", "?")
        return (
            f"CKAResult({self.name_a} {rows} layers x {self.name_b} {cols} layers, diagonal band {band:.3f}, "
            f"n={n}, {weights_text(self.metadata, detail=False)})"
        )

    def plot(self, ax=None, **kwargs):
        """Draw the heatmap (see :func:`cka_probe.plots.plot_cka_heatmap`), titled from the metadata (models,
        weights, data, n) unless ``title``/``subtitle`` are given; returns the axes.

        Keyword arguments go to :func:`~cka_probe.plots.plot_cka_heatmap`, e.g. ``labels="names"``.
        """
        from ..plots import plot_cka_heatmap

        heading = self.figure_title()
        kwargs.setdefault("title", heading.title)
        kwargs.setdefault("subtitle", heading.subtitle)
        return plot_cka_heatmap(self.matrix, ax=ax, **kwargs)

    def paths(self, directory: str | Path, formats=("png",), stem: str | None = None) -> dict[str, Path]:
        """Where :meth:`save` writes: ``csv``, ``json`` and one entry per figure format."""
        return output_paths(directory, stem or output_stem(self.name_a, self.name_b), formats)

    def save(
        self,
        directory: str | Path = "figures",
        formats=("png",),
        stem: str | None = None,
        overwrite: bool = False,
        dpi: int = 200,
        labels: str = "auto",
    ) -> dict[str, Path]:
        """Write ``A_vs_B.csv``, ``A_vs_B.json`` and the heatmap in each format, atomically and as one set (the JSON
        renamed last: :mod:`cka_probe.engine._io`).

        Nothing is written when any target exists and ``overwrite`` is false, unless the set is one a kill cut
        short (its JSON missing). ``labels`` sets the heatmap's axis labels: ``"names"``, ``"index"`` or
        ``"auto"`` (see :func:`cka_probe.plots.plot_cka_heatmap`).
        """
        from ..plots.titles import check_labels

        check_labels(labels)  # before anything is written
        paths = self.paths(directory, formats, stem)
        ensure_writable_dir(directory)
        check_outputs(paths.values(), overwrite)
        figure_formats = list(formats)
        with atomic_paths(
            {**{fmt: paths[fmt] for fmt in figure_formats}, "csv": paths["csv"], "json": paths["json"]}
        ) as tmp:
            if figure_formats:  # the figure is drawn once and saved in every format
                from ..plots import new_figure

                fig = new_figure()
                # the table beside the figure, named so: a stem of two checkpoints' labels is long
                self.plot(ax=fig.subplots(), labels=labels, key="the CSV of the same name")
                for fmt in figure_formats:
                    fig.savefig(tmp[fmt], format=fmt, dpi=dpi)
            self.matrix.to_csv(tmp["csv"], float_format="%.10g")
            tmp["json"].write_text(json.dumps(_jsonable(self.metadata), indent=2, sort_keys=False) + "\n")
        return paths

    @classmethod
    def load(cls, csv_path: str | Path) -> CKAResult:
        """Read a result written by :meth:`save` (the JSON beside the CSV, if present)."""
        csv_path = Path(csv_path)
        matrix = pd.read_csv(csv_path, index_col=0)
        json_path = csv_path.with_suffix(".json")
        metadata = json.loads(json_path.read_text()) if json_path.exists() else {}
        models = metadata.get("models", {})
        side_a, side_b = models.get("a", {}), models.get("b", {})
        matrix.index.name = side_a.get("label", side_a.get("name", matrix.index.name))
        matrix.columns.name = side_b.get("label", side_b.get("name"))
        return cls(matrix=matrix, metadata=metadata)


def _jsonable(value):
    """Plain JSON types; NaN becomes null so that strict parsers read the file."""
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
