"""The diagonal-band score: one symmetric definition, checked on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cka_probe.jobs.summary import depth_correspondence, diagonal_band_mask, diagonal_band_mean, score_interval


def test_band_of_a_3_by_5_matrix_by_hand():
    # d_a = 1/6, 1/2, 5/6 and d_b = 0.1, 0.3, 0.5, 0.7, 0.9; w = 0.1.
    # In the band: (0, 0) gap 1/15, (1, 2) gap 0, (2, 4) gap 1/15. Column 1 (0.3) has no cell in the band:
    # its nearest row is 0 (gap 2/15). Column 3 (0.7): nearest row 2 (gap 2/15). Every row has a cell.
    expected = np.zeros((3, 5), dtype=bool)
    expected[[0, 0, 1, 2, 2], [0, 1, 2, 3, 4]] = True
    np.testing.assert_array_equal(diagonal_band_mask(3, 5, width=0.1), expected)
    np.testing.assert_array_equal(diagonal_band_mask(5, 3, width=0.1), expected.T)
    values = np.arange(15.0).reshape(3, 5) / 10
    assert diagonal_band_mean(values) == pytest.approx((0.0 + 0.1 + 0.7 + 1.3 + 1.4) / 5)
    values[0, 0] = np.nan  # NaN cells are left out
    assert diagonal_band_mean(values) == pytest.approx((0.1 + 0.7 + 1.3 + 1.4) / 4)


def test_score_is_the_same_for_a_matrix_and_its_transpose():
    # Issue 8: a 20 x 2 matrix gave 0.583 and its transpose 0.696.
    rng = np.random.default_rng(0)
    for shape in [(20, 2), (7, 3), (12, 12), (1, 9), (50, 13)]:
        matrix = rng.random(shape)
        assert diagonal_band_mean(matrix) == diagonal_band_mean(matrix.T)
        np.testing.assert_array_equal(diagonal_band_mask(*shape), diagonal_band_mask(*shape[::-1]).T)


def test_20_by_2_band_by_hand():
    # d_b = 0.25, 0.75; rows 3-6 are within 0.1 of 0.25 and rows 13-16 of 0.75. Every other row falls back
    # to its nearest column: rows 0-9 to column 0, rows 10-19 to column 1; both columns have band cells.
    mask = diagonal_band_mask(20, 2)
    assert mask[:10, 0].all() and not mask[:10, 1].any()
    assert mask[10:, 1].all() and not mask[10:, 0].any()
    values = np.tile([[1.0, 0.0]], (20, 1))
    assert diagonal_band_mean(values) == 0.5 == diagonal_band_mean(values.T)


def test_every_row_and_column_has_a_cell_in_the_band():
    for rows, cols in [(2, 40), (40, 2), (9, 4), (3, 3)]:
        mask = diagonal_band_mask(rows, cols, width=0.05)
        assert mask.any(axis=1).all() and mask.any(axis=0).all()


def test_score_interval_is_the_percentiles_of_the_replicates_scores():
    rng = np.random.default_rng(0)
    replicates = rng.uniform(0, 1, size=(41, 4, 6))
    # by hand: the band of a 4 x 6 matrix, per replicate, then NumPy's linear-interpolation quantiles
    da, db = (np.arange(4) + 0.5) / 4, (np.arange(6) + 0.5) / 6
    band = np.abs(da[:, None] - db[None, :]) <= 0.1
    band |= (~band.any(axis=1, keepdims=True)) & (
        np.abs(da[:, None] - db) == np.abs(da[:, None] - db).min(1, keepdims=True)
    )
    band |= (~band.any(axis=0, keepdims=True)) & (
        np.abs(da[:, None] - db) == np.abs(da[:, None] - db).min(0, keepdims=True)
    )
    scores = np.array([r[band].mean() for r in replicates])
    low, high = score_interval(replicates, level=0.9)
    assert low == pytest.approx(np.quantile(scores, 0.05), abs=1e-14)
    assert high == pytest.approx(np.quantile(scores, 0.95), abs=1e-14)
    dc_low, dc_high = score_interval(replicates, depth_correspondence, level=0.9)
    dc = np.array([depth_correspondence(r) for r in replicates])
    assert (dc_low, dc_high) == pytest.approx(tuple(np.quantile(dc, [0.05, 0.95])), abs=1e-14)


def test_score_interval_with_an_undefined_replicate_is_nan():
    replicates = np.ones((3, 2, 2))
    replicates[1] = np.nan
    assert all(np.isnan(score_interval(replicates)))
