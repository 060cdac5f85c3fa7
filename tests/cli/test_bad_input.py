"""Every option of every command and every key of the job configs, fed a malformed value: exit code 2,
one ``Error:`` line, no traceback, and nothing left behind.

The tables below must name every option a command has (a new option without a malformed value here
fails :func:`test_every_option_has_a_malformed_case`), and the config keys are walked from the schema.
"""

from __future__ import annotations

import typing

import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from cka_probe.cli.main import main
from cka_probe.jobs.config import SCHEMAS

MODELS = ["test_resnet", "test_vit"]
NOT_A_FILE = "/nonexistent/cka-probe/file.pth"

# option -> (malformed value, a fragment the one-line error must hold)
COMPARE = {
    "--data": ("/nonexistent/cka-probe/images", "/nonexistent/cka-probe/images"),
    "--num-images": ("1", "--num-images"),
    "--batch-size": ("0", "--batch-size"),
    "--seed": ("-1", "--seed"),
    "--seed-a": ("x", "--seed-a"),
    "--seed-b": ("-3", "--seed-b"),
    "--weights": ("imagenet", "--weights"),
    "--checkpoint-a": (NOT_A_FILE, NOT_A_FILE),
    "--checkpoint-b": (NOT_A_FILE, NOT_A_FILE),
    "--checkpoint-key-a": ("teacher", "--checkpoint-key-a"),
    "--checkpoint-key-b": ("best", "--checkpoint-key-b"),
    "--num-classes-a": ("0", "--num-classes-a"),
    "--num-classes-b": ("ten", "--num-classes-b"),
    "--img-size-a": ("0", "--img-size-a"),
    "--img-size-b": ("big", "--img-size-b"),
    "--layers-a": ("no_such_layer*", "no_such_layer*"),
    "--layers-b": ("no_such_layer*", "no_such_layer*"),
    "--tokens": ("first", "--tokens"),
    "--tokens-a": ("first", "--tokens-a"),
    "--tokens-b": ("first", "--tokens-b"),
    "--layouts-a": ("blocks.*", "--layouts-a"),
    "--layouts-b": ("blocks.*=HWC", "--layouts-b"),
    "--pool": ("median", "--pool"),
    "--kernel": ("poly", "--kernel"),
    "--estimator": ("auto", "--estimator"),
    "--precision": ("float16", "--precision"),
    "--device": ("gpu", "--device"),
    "--out": ("FILE", "is a file"),
    "--name": ("../escape", "--name"),
    "--format": ("gif", "gif"),
    "--labels": ("both", "--labels"),
    "--cache-dir": ("FILE", "cache"),
}
LAYERS = {
    "--layers": ("no_such_layer*", "no_such_layer*"),
    "--tokens": ("first", "--tokens"),
    "--pool": ("median", "--pool"),
    "--layouts": ("blocks.*", "--layouts"),
    "--img-size": ("-4", "--img-size"),
}
JOB = {
    "--set": ("data.n=[1", "data.n=[1"),
    "--out": ("FILE", "is a file"),
    "--cache-dir": ("FILE", "cache"),
    "--labels": ("both", "--labels"),
}
FIGURE = {**JOB, "--name": ("../escape", "output.name")}
ZOO = {
    **JOB,
    "--executor": ("slurm", "--executor"),
    "--permutations": ("-2", "--permutations"),
    "--bootstrap": ("many", "--bootstrap"),
    "--address": ("127.0.0.1:1", "127.0.0.1:1"),
}
TRAIN = {
    "--config": (NOT_A_FILE, NOT_A_FILE),
    "--set": ("epochs=[1", "--set 'epochs=[1'"),
    "--resume": (NOT_A_FILE, NOT_A_FILE),
    "--nproc": ("0", "--nproc"),
    "--cka-every": ("-1", "--cka-every"),
}
VALIDATE = {
    "--data": ("/nonexistent/cka-probe/images", "/nonexistent/cka-probe/images"),
    "--dataset": ("mnist", "--dataset"),
    "--model": ("no_such_net_zz", "no_such_net_zz"),
    "--checkpoint-key": ("teacher", "--checkpoint-key"),
    "--num-classes": ("0", "--num-classes"),
    "--batch-size": ("-1", "--batch-size"),
    "--num-images": ("x", "--num-images"),
    "--img-size": ("0", "--img-size"),
    "--workers": ("-1", "--workers"),
    "--device": ("gpu", "--device"),
}
IDENTIFY = {
    "--model": ("no_such_net_zz", "no_such_net_zz"),
    "--config": (NOT_A_FILE, NOT_A_FILE),
    "--set": ("data.n=[1", "data.n=[1"),
    "--data": ("/nonexistent/cka-probe/images", "/nonexistent/cka-probe/images"),
    "--num-images": ("1", "--num-images"),
    "--batch-size": ("0", "--batch-size"),
    "--seed": ("-1", "--seed"),
    "--layers": ("no_such_layer*", "no_such_layer*"),
    "--tokens": ("first", "--tokens"),
    "--layouts": ("blocks.*", "--layouts"),
    "--checkpoint-key": ("teacher", "--checkpoint-key"),
    "--pool": ("median", "median"),
    "--estimator": ("auto", "--estimator"),
    "--precision": ("float16", "--precision"),
    "--device": ("gpu", "--device"),
    "--out": ("FILE", "is a file"),
    "--name": ("../escape", "--name"),
    "--format": ("gif", "gif"),
}
CASES = {
    "identify": IDENTIFY,
    "compare": COMPARE,
    "layers": LAYERS,
    "figure": FIGURE,
    "zoo": ZOO,
    "train": TRAIN,
    "validate": VALIDATE,
}
FLAGS_AND_FREE = {
    "--help",
    "--verbose",
    "--overwrite",
    "--no-progress",
    "--no-cache",
    "--unbiased",
    "--skip-bad",
    "--progress",
}


def _run(args, tmp_path):
    return CliRunner().invoke(main, [str(a) for a in args], env={"CKA_PROBE_CACHE": str(tmp_path / "cache")})


def _assert_one_line(result, fragment):
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.output
    assert fragment in lines[0], lines[0]
    assert "Traceback" not in result.output


def _job_file(tmp_path, kind):
    config = {"weights": "random", "data": {"n": 8}, "models": list(MODELS)}
    if kind == "figure":
        config["panels"] = [[list(MODELS)]]
    path = tmp_path / f"{kind}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _base_args(command, tmp_path):
    out = tmp_path / "out"
    if command == "compare":
        return ["compare", *MODELS, "--weights", "random", "-n", "8", "--out", out, "--no-progress"]
    if command == "layers":
        return ["layers", "test_vit"]
    if command in ("figure", "zoo"):
        return [command, _job_file(tmp_path, command), "--out", out, "--no-progress"]
    if command == "identify":
        import timm
        import torch

        paths = []
        for seed in (0, 1):
            torch.manual_seed(seed)
            paths.append(tmp_path / f"seed{seed}.pth")
            torch.save(timm.create_model("test_resnet").state_dict(), paths[-1])
        return [
            "identify",
            *paths,
            "--model",
            "test_resnet",
            "--data",
            "synthetic",
            "-n",
            "8",
            "--out",
            out,
            "--no-progress",
        ]
    if command == "validate":
        import timm
        import torch

        checkpoint = tmp_path / "student.pth"
        torch.save({"state_dict": timm.create_model("test_resnet", num_classes=10).state_dict()}, checkpoint)
        return ["validate", checkpoint, "--model", "test_resnet", "--dataset", "fashion_mnist"]
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": "fashion_mnist", "epochs": 1}))
    return ["train", "--config", recipe]


@pytest.mark.parametrize("command", sorted(CASES))
def test_every_option_has_a_malformed_case(command):
    options = {opt for param in main.commands[command].params for opt in param.opts if opt.startswith("--")}
    flags = {opt for param in main.commands[command].params if getattr(param, "is_flag", False) for opt in param.opts}
    missing = options - flags - FLAGS_AND_FREE - set(CASES[command])
    assert not missing, f"add malformed values for {sorted(missing)}"


@pytest.mark.parametrize("command,option", [(c, o) for c, table in sorted(CASES.items()) for o in sorted(table)])
def test_malformed_option_is_one_line(tmp_path, command, option):
    value, fragment = CASES[command][option]
    if value == "FILE":
        value = tmp_path / "a_file"
        value.write_text("x")
    args = _base_args(command, tmp_path)
    if command == "train" and option == "--config":
        args = ["train"]
    args = [*args, option, value]
    _assert_one_line(_run(args, tmp_path), fragment)
    assert not (tmp_path / "out").exists(), "a failed run left an output folder behind"


def _malformed(annotation) -> list:
    """Values that no type in ``annotation`` accepts."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is typing.Annotated:
        return _malformed(args[0])
    if origin is typing.Literal:
        return ["bogus"]
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        members = [a for a in args if a is not type(None)]
        if any(typing.get_origin(m) is list for m in members) and any(m is str for m in members):
            return [12]
        return _malformed(members[0]) if len(members) == 1 else [{"a": 1}]
    if annotation is bool:
        return ["maybe"]
    if annotation is int:
        return ["abc", 1.7, -1]
    if annotation is float:
        return ["high", -1.0]
    if annotation is str:
        return [12]
    if typing.get_origin(annotation) is None and annotation not in (bool, int, float, str):
        raise AssertionError(f"no malformed value for {annotation}")
    if origin is list:
        return ["not a list of the right kind", [{"a": 1}]] if args and args[0] is not str else [[{"a": 1}]]
    if origin is dict:
        return [["a list"]]
    raise AssertionError(f"no malformed value for {annotation}")


def _config_keys(schema: type[BaseModel], prefix: str = ""):
    for name, info in schema.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _config_keys(annotation, f"{prefix}{name}.")
        elif name not in ("models", "panels"):
            yield f"{prefix}{name}", annotation


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_config_key_with_a_malformed_value_is_one_line(tmp_path, kind):
    config = _job_file(tmp_path, kind)
    checked = 0
    for key, annotation in _config_keys(SCHEMAS[kind]):
        for value in _malformed(annotation):
            text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            result = _run([kind, config, "--out", tmp_path / "out", "--set", f"{key}={text}"], tmp_path)
            _assert_one_line(result, key)
            checked += 1
    assert checked >= 25
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("kind", sorted(SCHEMAS))
def test_every_model_entry_key_with_a_malformed_value_is_one_line(tmp_path, kind):
    from cka_probe.jobs.config import ModelEntry

    for key, annotation in _config_keys(ModelEntry):
        for value in _malformed(annotation):
            config = {
                "weights": "random",
                "data": {"n": 8},
                "models": [{"name": "test_resnet", key: value}, "test_vit"],
            }
            if key == "name":
                config["models"][0] = {"name": value}
            if kind == "figure":
                config["panels"] = [[["test_resnet", "test_vit"]]]
            path = tmp_path / "entry.yaml"
            path.write_text(yaml.safe_dump(config))
            _assert_one_line(_run([kind, path, "--out", tmp_path / "out"], tmp_path), f"models[0].{key}")


def test_every_recipe_key_with_a_malformed_value_is_one_line(tmp_path):
    """Every key of the training recipe schema, fed values of the wrong type or range through ``--set``."""
    from cka_probe.ofa.config import TrainConfig

    out = tmp_path / "out"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml.safe_dump({"dataset": "fashion_mnist", "epochs": 1, "output_dir": str(out)}))
    checked = set()
    for key, annotation in _config_keys(TrainConfig):
        for value in _malformed(annotation):
            text = yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("...").strip()
            result = _run(["train", "--config", recipe, "--set", f"{key}={text}", "--no-progress"], tmp_path)
            _assert_one_line(result, key)
            assert f"--set {key}=" in result.output, result.output
            checked.add(key)
    assert checked == set(TrainConfig.keys())
    assert not out.exists(), "a refused recipe left its output_dir behind"


def test_settings_that_cannot_go_together_are_one_line(tmp_path):
    out = tmp_path / "out"
    base = ["compare", *MODELS, "--weights", "random", "-n", "8", "--out", out, "--no-progress"]
    _assert_one_line(_run([*base, "--pool", "flatten", "--batch-size", "4"], tmp_path), "--pool flatten")
    _assert_one_line(
        _run([*base, "--estimator", "minibatch", "--precision", "float32"], tmp_path), "float32 applies to the full"
    )
    _assert_one_line(_run(["zoo", _job_file(tmp_path, "zoo"), "--out", out, "--address", "x:1"], tmp_path), "--address")
    assert not out.exists()


def test_a_zoo_left_with_fewer_than_two_models_is_one_line(tmp_path, monkeypatch):
    import cka_probe.engine.features as features_module

    real = features_module.model_features

    def fails_for_vit(request, *args, **kwargs):  # a model that passes the pre-flight checks and fails as it runs
        if request.display == "test_vit":
            raise RuntimeError("CUDA out of memory while running test_vit")
        return real(request, *args, **kwargs)

    monkeypatch.setattr(features_module, "model_features", fails_for_vit)
    config = tmp_path / "zoo.yaml"
    config.write_text(yaml.safe_dump({"weights": "random", "data": {"n": 8}, "models": ["test_resnet", "test_vit"]}))
    result = _run(["zoo", config, "--out", tmp_path / "out", "--no-progress"], tmp_path)
    _assert_one_line(result, "1 of 2 models failed, leaving no pair to compare")
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_every_identify_config_key_with_a_malformed_value_is_one_line(tmp_path):
    from cka_probe.jobs.config import IdentifyJob

    checked = 0
    for key, annotation in _config_keys(IdentifyJob):
        if key == "checkpoints":
            continue
        for value in _malformed(annotation):
            config = {"model": "test_resnet", "checkpoints": [str(tmp_path / "seed*.pth")]}
            section, _, name = key.rpartition(".")
            (config.setdefault(section, {}) if section else config)[name] = value
            path = tmp_path / "identify.yaml"
            path.write_text(yaml.safe_dump(config))
            result = _run(["identify", "--config", path, "--out", tmp_path / "out"], tmp_path)
            _assert_one_line(result, key)
            assert f"--set {key}" in result.output, result.output  # the fix: the file, or --set as for figure and zoo
            checked += 1
    assert checked >= 10
    assert not (tmp_path / "out").exists()
