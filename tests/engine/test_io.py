from __future__ import annotations

import pytest

from cka_probe.engine._io import OutputDirError, atomic_path, ensure_writable_dir
from cka_probe.jobs.summary import diagonal_band_mask, diagonal_band_mean


def test_atomic_path_leaves_nothing_half_written(tmp_path):
    target = tmp_path / "result.csv"
    target.write_text("old\n")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    assert target.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["result.csv"]
    with atomic_path(target) as tmp:
        tmp.write_text("new\n")
    assert target.read_text() == "new\n"
    assert target.stat().st_mode & 0o044  # readable by others, as a normally written file


def test_unwritable_output_directory(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(OutputDirError, match="cannot write"):
        ensure_writable_dir(blocker / "sub")


def test_diagonal_band_on_constructed_matrices():
    import numpy as np

    assert diagonal_band_mean(np.eye(5)) == 1.0
    anti = np.fliplr(np.eye(5))
    assert diagonal_band_mean(anti) == pytest.approx(1 / 5)  # only the centre cell is on both diagonals
    mask = diagonal_band_mask(10, 5, width=0.1)
    assert mask.sum(axis=1).min() >= 1 and mask[0, 0] and mask[-1, -1] and not mask[0, -1]
    with_nan = np.eye(3)
    with_nan[1, 1] = np.nan
    assert diagonal_band_mean(with_nan) == 1.0
