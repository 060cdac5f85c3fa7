"""scripts/figure6_trained.py --smoke: train, checkpoints, figure and scores, end to end (the CI variant)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pandas as pd
import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "figure6_trained.py"


def _script():
    spec = importlib.util.spec_from_file_location("figure6_trained", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_smoke_trains_reads_back_and_scores_every_pair(tmp_path):
    script = _script()
    out = tmp_path / "f6"
    assert script.main(["--smoke", "--out", str(out)]) == 0
    runs = [out / "runs" / f"{arch}-s{seed}" for arch in script.ARCHS for seed in script.SEEDS]
    for run in runs:
        assert (run / "init.pth").exists() and (run / "best.pth").exists(), run
    results = json.loads((out / "results.json").read_text())
    assert set(results["accuracy"]) == {run.name for run in runs}
    assert all(0.0 <= value <= 100.0 for value in results["accuracy"].values())

    # The grid reads every checkpoint as the run trained it: its own input size and mean/std, its epoch.
    figure = json.loads((out / "figure6_trained.json").read_text())
    assert (out / "figure6_trained.png").stat().st_size > 0
    assert len(figure["models"]) == 12
    for label, record in figure["models"].items():
        assert record["data_config_source"] == "run", label
        assert record["data_config"]["input_size"] == [3, 28, 28]
        assert record["data_config"]["mean"] == pytest.approx([0.286] * 3)
        assert record["epoch"] == (0 if label.endswith(" init") else 1)

    # Every pair of distinct networks is scored, with an interval around each score's replicates.
    summary = pd.read_csv(out / "zoo" / "pairs_summary.csv")
    assert len(summary) == 12 * 11 // 2 or len(summary) == 12 * 11
    for score in ("diagonal_band_cka", "depth_correspondence"):
        assert (summary[f"{score}_low"] <= summary[f"{score}_high"]).all()
    # The initial weights are the run's own: a rerun reuses every run and changes no number.
    first = (out / "results.json").read_text()
    assert script.main(["--smoke", "--out", str(out)]) == 0
    again = json.loads((out / "results.json").read_text())
    assert again["accuracy"] == json.loads(first)["accuracy"] and again["scores"] == json.loads(first)["scores"]
