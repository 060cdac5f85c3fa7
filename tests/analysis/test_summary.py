"""The diagonal-band score: one symmetric definition, checked on hand-computed cases."""

from __future__ import annotations

import numpy as np
import pytest

from cka_probe.analysis.summary import diagonal_band_mask, diagonal_band_mean


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
