"""The compare, layers and models commands through click's CliRunner: outputs, and every bad input's one-line error."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import timm
import torch
from click.testing import CliRunner

from cka_probe.cli.main import main

FAST = ["--weights", "random", "-n", "8", "--no-progress", "--device", "cpu"]


def run(*args, env=None):
    return CliRunner().invoke(main, list(args), env=env)


def test_compare_writes_csv_json_png(tmp_path):
    result = run("compare", "test_resnet", "test_vit", *FAST, "--out", str(tmp_path), "--format", "png,pdf")
    assert result.exit_code == 0, result.output
    stem = tmp_path / "test_resnet_vs_test_vit"
    table = pd.read_csv(f"{stem}.csv", index_col=0)
    meta = json.loads(stem.with_suffix(".json").read_text())
    assert table.shape == (len(meta["layers"]["a"]), len(meta["layers"]["b"])) == (12, 6)
    assert list(table.index) == [row["name"] for row in meta["layers"]["a"]]
    assert stem.with_suffix(".png").exists() and stem.with_suffix(".pdf").exists()
    assert "diagonal-band CKA" in result.output and str(stem) in result.output
    layers = run("layers", "test_resnet")
    assert layers.exit_code == 0 and "12 layers" in layers.output
    assert [line.split()[1] for line in layers.output.splitlines()[1:-1]] == list(table.index)


def test_existing_outputs_are_not_overwritten(tmp_path, assert_one_line_error):
    assert run("compare", "test_resnet", "test_vit", *FAST, "--out", str(tmp_path)).exit_code == 0
    before = (tmp_path / "test_resnet_vs_test_vit.csv").read_bytes()
    again = run("compare", "test_resnet", "test_vit", *FAST, "--out", str(tmp_path), "--seed", "3")
    assert_one_line_error(again, "exists already", "--overwrite")
    assert (tmp_path / "test_resnet_vs_test_vit.csv").read_bytes() == before
    forced = run("compare", "test_resnet", "test_vit", *FAST, "--out", str(tmp_path), "--seed", "3", "--overwrite")
    assert forced.exit_code == 0
    assert (tmp_path / "test_resnet_vs_test_vit.csv").read_bytes() != before


def test_unknown_model_suggests_close_names(tmp_path, assert_one_line_error):
    assert_one_line_error(run("compare", "mobilenetv2", "vitt_s", *FAST, "--out", str(tmp_path)), "vitt_s", "vit_s")
    assert list(tmp_path.iterdir()) == []


def test_layer_pattern_matching_nothing(tmp_path, assert_one_line_error):
    result = run("compare", "test_resnet", "test_vit", *FAST, "--out", str(tmp_path), "--layers-b", "blocks.*.mlp.actt")
    assert_one_line_error(result, "blocks.*.mlp.actt")


def test_missing_and_empty_data_directories(tmp_path, assert_one_line_error):
    out = tmp_path / "out"
    assert_one_line_error(
        run("compare", "test_resnet", "test_vit", *FAST, "--out", str(out), "--data", str(tmp_path / "nope"))
    )
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run("compare", "test_resnet", "test_vit", *FAST, "--out", str(out), "--data", str(empty)))


def test_more_images_than_available(tmp_path, assert_one_line_error):
    result = run(
        "compare",
        "test_resnet",
        "test_vit",
        "--weights",
        "random",
        "--no-progress",
        "-n",
        "100000",
        "--out",
        str(tmp_path),
    )
    assert_one_line_error(result, "100000")


def test_unbiased_with_too_few_images(tmp_path, assert_one_line_error):
    result = run(
        "compare", "test_resnet", "test_vit", "--weights", "random", "-n", "3", "--unbiased", "--out", str(tmp_path)
    )
    assert_one_line_error(result, "n >= 4")


def test_output_directory_that_cannot_be_written(tmp_path, assert_one_line_error):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    assert_one_line_error(run("compare", "test_resnet", "test_vit", *FAST, "--out", str(blocker / "out")), "--out")


def test_checkpoint_that_does_not_fit(tmp_path, assert_one_line_error):
    wrong = tmp_path / "wrong.pth"
    torch.save(timm.create_model("test_efficientnet", pretrained=False).state_dict(), wrong)
    result = run(
        "compare", "test_resnet", "test_vit", *FAST, "--out", str(tmp_path / "o"), "--checkpoint-a", str(wrong)
    )
    assert_one_line_error(result, "wrong.pth")


def test_pretrained_offline_is_a_clear_error(tmp_path, assert_one_line_error):
    env = {"HF_HUB_OFFLINE": "1", "HF_HOME": str(tmp_path / "hf")}
    result = run("compare", "mobilenetv2", "vit_s", "-n", "8", "--no-progress", "--out", str(tmp_path / "o"), env=env)
    assert_one_line_error(result, "--weights random")
    assert not (tmp_path / "o" / "mobilenetv2_vs_vit_s.csv").exists()


def test_verbose_shows_the_traceback(tmp_path):
    result = run("compare", "mobilenetv2", "vitt_s", *FAST, "--out", str(tmp_path), "--verbose")
    assert result.exit_code == 2 and "Traceback" in result.output


def test_models_lists_aliases_and_timm_names():
    result = run("models", "vit_s*")
    assert result.exit_code == 0
    assert "vit_s " in result.output and "vit_small_patch16_224" in result.output
    assert "mobilenetv2" not in result.output


def test_layers_with_pool_flatten_shows_each_layers_flattened_width():
    # test_vit's MLP activations are (101, 192) per image: a class token and 100 patch tokens. Flattened under
    # --tokens patch the class token is dropped (100 * 192); --tokens all keeps it (101 * 192); maps are C*H*W.
    def widths(*args):
        result = run("layers", *args, "--pool", "flatten")
        assert result.exit_code == 0, result.output
        rows = [line.split() for line in result.output.splitlines()[1:]]
        rows = [row for row in rows if len(row) > 2 and row[0].isdigit()]  # not the "N layers" summary
        return {row[1]: int(row[-1]) for row in rows}

    patch = widths("test_vit")
    assert patch and set(patch.values()) == {100 * 192}
    assert set(widths("test_vit", "--tokens", "all").values()) == {101 * 192}
    maps = widths("test_resnet")
    assert maps["conv1.2"] == 16 * 80 * 80 and maps["layer4.0.act2"] == 96 * 5 * 5


@pytest.mark.parametrize("fault", ["full disk", "file changed"])
def test_spooled_grams_that_cannot_be_written_or_read_back_are_one_line(
    tmp_path, monkeypatch, fault, assert_one_line_error
):
    # --pool flatten over several batches keeps each batch's Grams on disk (analysis/spool.py): a disk that fills,
    # or a batch file that another job replaces before it is read, ends the run with exit code 2 and one line.
    import cka_probe.engine.spool as spool_module

    if fault == "full disk":

        def save(*args, **kwargs):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(spool_module, "save", save)
        expected = ("No space left on device", "--cache-dir")
    else:
        append = spool_module.GramSpool.append

        def append_then_change(self, grams):
            append(self, grams)
            self.digests[-1] = "0" * 64  # what a file written by someone else would hash to, here

        monkeypatch.setattr(spool_module.GramSpool, "append", append_then_change)
        expected = ("it changed during the run", "--no-cache")
    out = tmp_path / "out"
    args = ["--weights", "random", "-n", "16", "--batch-size", "8", "--no-progress", "--device", "cpu"]
    result = run(
        "compare", "test_resnet", "test_vit", *args, "--pool", "flatten", "--estimator", "minibatch", "--no-cache",
        "--out", str(out),
    )  # fmt: skip
    assert_one_line_error(result, *expected)
    assert not out.exists() or list(out.iterdir()) == []
