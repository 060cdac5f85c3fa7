from __future__ import annotations

import numpy as np
import pandas as pd

from cka_probe.plots import new_figure, plot_cka_heatmap, thinned_ticks


def _matrix(rows=35, cols=12):
    values = np.linspace(0, 1, rows * cols).reshape(rows, cols)
    return pd.DataFrame(values, index=pd.Index([f"a{i}" for i in range(rows)], name="mobilenetv2"),
                        columns=pd.Index([f"b{j}" for j in range(cols)], name="vit_s"))


def test_first_layer_of_a_at_the_bottom_and_fixed_colour_scale():
    ax = new_figure().subplots()
    plot_cka_heatmap(_matrix(), ax)
    bottom, top = ax.get_ylim()
    assert bottom < top and bottom == 0  # row 0 is drawn in [0, 1], at the bottom
    mesh = ax.collections[0]
    assert mesh.get_clim() == (0.0, 1.0)
    assert ax.get_ylabel() == "layers of mobilenetv2" and ax.get_xlabel() == "layers of vit_s"


def test_nan_cells_are_masked_and_ticks_thinned():
    matrix = _matrix()
    matrix.iloc[3, 4] = np.nan
    ax = new_figure().subplots()
    plot_cka_heatmap(matrix, ax, max_ticks=8)
    array = ax.collections[0].get_array()
    assert np.ma.count_masked(array) == 1
    assert len(ax.get_yticks()) <= 8 and ax.get_yticklabels()[0].get_text() == "1"
    assert ax.get_yticklabels()[-1].get_text() == "35"


def test_thinned_ticks_keep_both_ends():
    for count in (1, 5, 12, 35, 49, 100):
        ticks = thinned_ticks(count, 10)
        assert ticks[0] == 0 and ticks[-1] == count - 1 and len(ticks) <= 10
        assert ticks == sorted(set(ticks))
