"""A figure whose axes carry layer numbers writes the key beside it (model, number, layer) and says so."""

from __future__ import annotations

import pandas as pd

from cka_probe.jobs import make_figure, parse_job_config

RAW = {
    "weights": "random",
    "data": {"source": "synthetic", "n": 8},
    "models": [{"name": "test_resnet", "label": "R"}, {"name": "test_vit", "label": "V"}],
    "panels": [[["R", "V"], ["V", "V"]]],
    "output": {"name": "grid", "formats": ["png"], "labels": "index"},
}


def test_numbered_grid_writes_and_names_its_layer_key(tmp_path):
    result = make_figure(parse_job_config(RAW, "figure"), progress=False, cache=False)
    paths = result.save(tmp_path)
    key = pd.read_csv(paths["layers"])
    panels = pd.read_csv(paths["csv"])
    for model, side in (("R", "a"), ("V", "b")):  # the key's numbers are the panels' positions, from 1
        rows = panels[panels[f"model_{side}"] == model].drop_duplicates(f"index_{side}").sort_values(f"index_{side}")
        expected = list(zip(rows[f"index_{side}"] + 1, rows[f"layer_{side}"]))
        assert list(zip(key[key.model == model]["number"], key[key.model == model]["layer"])) == expected
    assert list(key.model.unique()) == ["R", "V"]  # each model once, though V is in two panels
    heading = result.draw(key=paths["layers"].name).get_suptitle().replace("\n", " ")
    assert heading.endswith("layers numbered from 1 in forward order; names in grid_layers.csv")
