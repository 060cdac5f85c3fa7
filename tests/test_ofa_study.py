"""scripts/ofa_study.py's summaries: the precondition, the differences from scratch, CKA to the teacher over epochs.

References are computed by hand from made-up accuracies and metrics records, never by the script's own code.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "scripts" / "ofa_study.py"


@pytest.fixture(scope="module")
def study():
    spec = importlib.util.spec_from_file_location("ofa_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.SEEDS = (0, 1, 2)  # the summaries read the module's seeds; pin them for the hand-computed values
    return module


def _accuracy(study, teacher: dict[str, float], per_method: dict[str, list[float]]) -> dict[str, float]:
    accuracy = {}
    for pair in study.PAIRS:
        accuracy[f"{pair}/teacher"] = teacher[pair]
        for method in study.METHODS:
            for seed, value in zip(study.SEEDS, per_method[method]):
                accuracy[f"{pair}/{method}_seed{seed}"] = value
    return accuracy


def test_teacher_margins_take_the_best_scratch_seed(study):
    cnn_to_vit, vit_to_cnn = study.PAIRS
    methods = {method: [80.0, 82.5, 81.0] for method in study.METHODS}
    accuracy = _accuracy(study, {cnn_to_vit: 85.0, vit_to_cnn: 82.0}, methods)
    margins = study.teacher_margins(accuracy)
    # 85.0 - max(80.0, 82.5, 81.0) = 2.5; 82.0 beats two seeds but not 82.5: -0.5
    assert margins[cnn_to_vit]["margin"] == pytest.approx(2.5)
    assert margins[cnn_to_vit]["holds"] is True
    assert margins[vit_to_cnn]["margin"] == pytest.approx(-0.5)
    assert margins[vit_to_cnn]["holds"] is False
    assert margins[vit_to_cnn]["scratch"] == [80.0, 82.5, 81.0]
    table = study.precondition_table(margins)
    assert "| 85.00 | 80.00, 82.50, 81.00 | +2.50 | yes |" in table
    assert "| 82.00 | 80.00, 82.50, 81.00 | -0.50 | NO |" in table


def test_top1_table_differences_from_scratch_are_taken_seed_by_seed(study):
    cnn_to_vit, vit_to_cnn = study.PAIRS
    methods = {"scratch": [80.0, 82.0, 84.0], "kd": [81.0, 82.0, 86.0], "fitnet": [80.0, 82.0, 84.0],
               "ofa": [79.0, 83.0, 84.0]}  # fmt: skip
    table = study.top1_table(_accuracy(study, {cnn_to_vit: 90.0, vit_to_cnn: 90.0}, methods))
    row = next(line for line in table.splitlines() if line.startswith(f"| {study._title(cnn_to_vit)} "))
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[1] == "90.00"
    assert cells[2] == "82.00 ± 2.00"  # mean 82, sample std sqrt(((-2)^2 + 0 + 2^2) / 2) = 2
    # kd - scratch per seed: +1, 0, +2 -> mean +1, sample std 1; kd itself: mean 83, std sqrt((4 + 1 + 9) / 2)
    assert cells[3] == f"83.00 ± {(14 / 2) ** 0.5:.2f} (+1.00 ± 1.00)"
    assert cells[4] == "82.00 ± 2.00 (+0.00 ± 0.00)"
    # ofa - scratch per seed: -1, +1, 0 -> mean 0, std 1 (the plain difference of means would hide the spread)
    assert cells[5].endswith("(+0.00 ± 1.00)")


def _record(epoch: int, values: dict[str, float] | None) -> dict:
    record = {"epoch": epoch, "val": {"top1": 50.0}}
    if values is not None:
        record["cka_to_teacher"] = {"n": 128, "student": values, "ema": {k: 0.0 for k in values}}
    return record


def test_cka_over_epochs_last_value_and_change_per_seed(study):
    histories = {}
    for pair in study.PAIRS:
        for method in study.METHODS:
            for seed in study.SEEDS:
                start, end = 0.5, 0.5
                if method == "ofa":
                    start, end = 0.4 + 0.1 * seed, 0.6 + 0.2 * seed  # changes +0.2, +0.3, +0.4
                histories[f"{pair}/{method}_seed{seed}"] = [
                    _record(1, {"stage1": start, "final": 0.3}),
                    _record(2, None),  # an epoch without a measurement is skipped
                    _record(3, {"stage1": end, "final": 0.3}),
                ]
    histories["cnn_to_vit/teacher"] = [_record(1, None)]  # a run that measured nothing is left out
    trajectories = study.cka_trajectories(histories)
    assert "cnn_to_vit/teacher" not in trajectories
    run = trajectories["cnn_to_vit/ofa_seed1"]
    assert (run["first_epoch"], run["last_epoch"]) == (1, 3)
    assert run["first"] == pytest.approx({"stage1": 0.5, "final": 0.3})
    assert run["last"] == pytest.approx({"stage1": 0.8, "final": 0.3})  # the student's, not the EMA's 0.0
    table = study.cka_training_table(trajectories, "cnn_to_vit")
    assert table.splitlines()[0] == "| method | stage1 | final |"
    # ofa at the last epoch: 0.6, 0.8, 1.0 -> mean 0.8, std 0.2; changes 0.2, 0.3, 0.4 -> mean +0.3, std 0.1
    assert "| ofa | 0.800 ± 0.200 (+0.300 ± 0.100) | 0.300 ± 0.000 (+0.000 ± 0.000) |" in table
    assert "| scratch | 0.500 ± 0.000 (+0.000 ± 0.000) |" in table


def test_projection_scales_each_runs_step_time_to_its_full_recipe(study):
    # one run: 5 smoke steps in 1.0 s (0.2 s a step), 1 validation batch in 0.5 s, a CKA measurement of 0.25 s
    results = {"p/teacher": {"history": [{"train_seconds": 1.0, "seconds": 1.75, "cka_seconds": 0.25,
                                          "train": {"steps": 5}}]}}  # fmt: skip
    full = {"p/teacher": {"train_samples": None, "epochs": 2, "batch_size": 128, "val_samples": 1000}}
    seconds = study.project_full_run(results, full, smoke_val_batches=1, workers=2)
    steps = 2 * (60000 // 128)  # None: all 60,000 training images, whole batches
    per_epoch_eval = 8 * 0.5 + 0.25  # ceil(1000 / 128) = 8 validation batches and one CKA measurement
    assert seconds == pytest.approx((steps * 0.2 + 2 * per_epoch_eval) / 2)


def test_one_seed_is_refused_before_any_work(study, capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_info:
        study.main(["--smoke", "--seeds", "1", "1", "--out", str(tmp_path / "study")])
    assert exit_info.value.code == 2
    assert "give at least two different --seeds" in capsys.readouterr().err
    assert not (tmp_path / "study").exists()


def test_heatmaps_decide_names_or_numbers_once_for_the_figure(study, tmp_path, monkeypatch):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    short = [f"l{i}" for i in range(4)]
    long = [f"blocks.{i}.a.rather.long.layer.name.that.does.not.fit" for i in range(40)]
    evaluation = {"cka": {}, "probe_images": 8}
    for p, pair in enumerate(study.PAIRS):
        for method in study.METHODS:
            rows = long if p == 0 and method == "kd" else short  # one panel's names cannot fit
            evaluation["cka"][f"{pair}/{method}_seed{study.SEEDS[0]}"] = {
                "rows": rows, "cols": short, "values": [[0.5] * len(short) for _ in rows]
            }  # fmt: skip
    figures = []
    monkeypatch.setattr(plt.Figure, "savefig", lambda self, *a, **k: figures.append(self))
    study.draw_heatmaps(evaluation, tmp_path / "h.png")
    heatmaps = [ax for ax in figures[0].axes if ax.get_title()]
    assert len(heatmaps) == len(study.PAIRS) * len(study.METHODS)
    for ax in heatmaps:  # numbers on every panel, since one panel's names do not fit
        labels = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
        assert labels and all(label.isdigit() for label in labels), labels
