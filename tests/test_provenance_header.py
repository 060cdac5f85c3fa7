"""One provenance header: compare, figure, zoo, identify and a training run's CKA to the teacher carry the same
header keys, each of one type in all five outputs (issue 20)."""

from __future__ import annotations

import json

import pytest
import timm
import torch

from cka_probe.jobs import compare, make_figure, parse_job_config, run_zoo
from cka_probe.jobs.identify import identify
from cka_probe.ofa import Trainer
from cka_probe.ofa.config import load_config

from .ofa.conftest import tiny_datasets

# The header as the issue asks for it: models (per label), weights in each model's record, data (source, n,
# seed), layers, pooling, tokens (one type everywhere: a dict per model), estimator, kernel, precision, dtype,
# device, versions, created, seconds.
HEADER = {
    "cka_probe": str,
    "created": str,
    "models": dict,
    "data": dict,
    "n": int,
    "seed": int,
    "batch_size": int,
    "layers": dict,
    "pools": list,
    "pooling": str,
    "tokens": dict,
    "kernel": str,
    "unbiased": bool,
    "estimator": str,
    "estimator_description": str,
    "precision": str,
    "dtype": str,
    "device": str,
    "versions": dict,
    "environment": dict,
    "seconds": dict,
}
N = 8


def _job(kind, **extra):
    return parse_job_config(
        {
            "weights": "random",
            "data": {"n": N},
            "models": ["test_resnet", "test_vit"],
            "analysis": {"device": "cpu"},
            **extra,
        },
        kind,
    )


def _outputs(tmp_path):
    outputs = {}
    outputs["compare"] = compare(
        "test_resnet", "test_vit", n=N, weights="random", device="cpu", progress=False
    ).metadata
    figure = _job("figure", panels=[[["test_resnet", "test_vit"]]])
    outputs["figure"] = make_figure(figure, progress=False, cache=False).metadata
    zoo = run_zoo(_job("zoo", output={"dir": str(tmp_path / "zoo")}), progress=False, cache=False)
    outputs["zoo"] = json.loads((tmp_path / "zoo" / "manifest.json").read_text())
    assert outputs["zoo"] == json.loads(json.dumps(zoo.manifest, default=str))  # the file is the record
    checkpoints = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        checkpoints.append(str(tmp_path / f"seed{seed}.pth"))
        torch.save(timm.create_model("test_resnet").state_dict(), checkpoints[-1])
    outputs["identify"] = identify("test_resnet", checkpoints, n=N, device="cpu", progress=False).metadata
    torch.manual_seed(5)
    teacher = tmp_path / "teacher.pth"
    torch.save(timm.create_model("test_resnet", num_classes=10).state_dict(), teacher)
    config = load_config(
        None,
        {
            "method": "kd", "student": "test_resnet", "teacher": "test_resnet", "teacher_checkpoint": str(teacher),
            "num_classes": 10, "img_size": 16, "dataset": "fashion_mnist", "epochs": 1, "batch_size": 8,
            "warmup_epochs": 0, "opt": "sgd", "workers": 0, "output_dir": str(tmp_path / "run"), "device": "cpu",
            "amp": False, "limit_train_batches": 1, "limit_val_batches": 1, "cka_every": 1,
        },
    )  # fmt: skip
    result = Trainer(config, datasets=tiny_datasets(n_val=N)).fit()
    outputs["train"] = json.loads((result.output_dir / "cka_provenance.json").read_text())
    return outputs


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    return _outputs(tmp_path_factory.mktemp("outputs"))


@pytest.mark.parametrize("output", ["compare", "figure", "zoo", "identify", "train"])
def test_every_output_carries_the_header_with_one_type_per_key(outputs, output):
    record = json.loads(json.dumps(outputs[output], default=str))  # as written to disk
    missing = sorted(set(HEADER) - set(record))
    assert not missing, f"{output} lacks {missing}"
    wrong = {key: type(record[key]).__name__ for key, kind in HEADER.items() if not isinstance(record[key], kind)}
    assert not wrong, f"{output}: {wrong}"
    assert record["n"] == N and record["data"]["n"] == N and "total" in record["seconds"]
    assert set(record["tokens"]) == set(record["layers"]) <= set(record["models"])
    for label, rule in record["tokens"].items():
        assert set(rule) == {"rule", "description"} and rule["rule"] == "patch", (output, label)
    for label, layers in record["layers"].items():
        assert layers and all(isinstance(layer, dict) and layer["name"] for layer in layers), (output, label)
    assert record["pools"] == (["mean", "flatten"] if output == "identify" else ["mean"])
    assert record["pooling"].startswith("mean")


def test_the_five_headers_share_their_keys_and_types(outputs):
    kinds = {
        name: {key: type(value).__name__ for key, value in json.loads(json.dumps(record, default=str)).items()}
        for name, record in outputs.items()
    }
    shared = set.intersection(*(set(k) for k in kinds.values()))
    assert set(HEADER) <= shared
    for key in shared:
        assert len({kinds[name][key] for name in kinds} - {"NoneType"}) <= 1, {name: kinds[name][key] for name in kinds}
