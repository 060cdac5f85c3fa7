"""Files that are not (current) torch.save checkpoints: one line that says what the file is and what to do, no
warning from torch before it; a missing checkpoint names where its path was given."""

from __future__ import annotations

import pickle
import warnings

import pytest
import torch
import yaml
from click.testing import CliRunner

from cka_probe.cli.main import main
from cka_probe.errors import CheckpointError
from cka_probe.models import read_checkpoint

from ..cli.conftest import _assert_one_line_error


def _read_without_warnings(path):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with pytest.raises(CheckpointError) as info:
            read_checkpoint(path)
    assert [str(w.message) for w in caught] == []  # torch's "Detected pickle protocol" warning stays out
    assert "\n" not in str(info.value)
    return str(info.value)


def test_a_plain_pickle_file_says_what_it_is(tmp_path):
    path = tmp_path / "weights.pth"
    with open(path, "wb") as handle:
        pickle.dump({"fc.weight": [[1.0, 2.0]]}, handle, protocol=4)
    message = _read_without_warnings(path)
    assert "is a plain pickle file (pickle.dump), not a torch.save file" in message
    assert "torch.save(model.state_dict(), PATH)" in message


def test_a_legacy_torch_file_torch_cannot_read_safely_says_what_it_is(tmp_path):
    path = tmp_path / "old.pth"
    # the format before torch 1.6 (no zip archive), with pickle protocol 4, which the weights-only unpickler refuses
    torch.save({"fc.weight": torch.ones(2, 2)}, path, _use_new_zipfile_serialization=False, pickle_protocol=4)
    message = _read_without_warnings(path)
    assert "is a legacy torch.save file (the format before torch 1.6, not a zip archive)" in message
    assert "(Unsupported operand 149)" in message  # the unpickler's reason, not torch's page of advice
    assert "torch.save(torch.load(OLD, weights_only=False), NEW)" in message


def test_a_legacy_torch_file_it_can_read_is_read(tmp_path):
    path = tmp_path / "old.pth"
    torch.save({"fc.weight": torch.ones(2, 2)}, path, _use_new_zipfile_serialization=False)
    assert torch.equal(read_checkpoint(path)["fc.weight"], torch.ones(2, 2))


def test_bytes_that_are_no_pickle_are_not_a_torch_save_file(tmp_path):
    path = tmp_path / "junk.pth"
    path.write_bytes(b"hello world" * 10)  # sent torch's unpickler to a KeyError
    assert ": not a torch.save file (KeyError); pass a .pth/.pt/.bin written by torch.save" in _read_without_warnings(
        path
    )


def test_a_missing_checkpoint_in_a_job_config_names_its_key(tmp_path):
    config = tmp_path / "grid.yaml"
    missing = tmp_path / "none.pth"
    config.write_text(
        yaml.safe_dump(
            {
                "weights": "random",
                "data": {"n": 8},
                "models": ["test_resnet", {"name": "test_vit", "checkpoint": str(missing)}],
                "panels": [[["test_resnet", "test_vit"]]],
            }
        )
    )
    result = CliRunner().invoke(
        main,
        ["figure", str(config), "--out", str(tmp_path / "out"), "--no-progress"],
        env={"CKA_PROBE_CACHE": str(tmp_path / "cache")},
    )
    _assert_one_line_error(
        result, f"model test_vit: checkpoint {missing} does not exist", "the model's checkpoint: in the job config"
    )
    assert "Errno" not in result.output
