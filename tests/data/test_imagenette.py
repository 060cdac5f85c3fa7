"""Imagenette through torchvision: a local copy, and the error when it cannot be downloaded."""

from __future__ import annotations

import urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torchvision.datasets.imagenette

from cka_probe.data import load_probe_set
from cka_probe.errors import DataNotFoundError

from .conftest import (
    write_image,
)


def _fake_imagenette(root: Path, per_class: int = 3) -> Path:
    """The layout torchvision's Imagenette extracts (imagenette2-320/val/<wnid>/*.JPEG), with tiny images."""
    for wnid, colour in (("n01440764", (200, 0, 0)), ("n02102040", (0, 200, 0))):
        for i in range(per_class):
            write_image(root / "imagenette2-320" / "val" / wnid / f"{wnid}_{i}.JPEG", colour)
    return root


def _no_download(monkeypatch):
    calls = []

    def offline(url, *args, **kwargs):
        calls.append(url)
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets.imagenette, "download_and_extract_archive", offline)
    return calls


def test_imagenette_already_in_root_is_used_without_downloading(tmp_path, monkeypatch):
    calls = _no_download(monkeypatch)
    root = _fake_imagenette(tmp_path)
    probe = load_probe_set("imagenette", n=4, seed=0, root=root)
    assert calls == []
    assert probe.class_names == ("tench", "English springer")
    assert Counter(probe.labels) == {0: 2, 1: 2}
    assert all(i.startswith("imagenette2-320/val/n0") for i in probe.image_ids)
    assert probe.kind == "imagenette" and "320px validation" in probe.source


def test_imagenette_not_cached_and_not_downloadable_is_a_clear_error(tmp_path, monkeypatch):
    calls = _no_download(monkeypatch)
    with pytest.raises(DataNotFoundError, match=r"Imagenette \(160px\) is not in .* could not be downloaded") as info:
        load_probe_set("imagenette:160px", root=tmp_path)
    assert "\n" not in str(info.value) and "--data embedded" in str(info.value)
    assert "set CKA_PROBE_CACHE to use another cache folder" in str(info.value) and "pass root=" not in str(info.value)
    assert len(calls) == 1 and calls[0].endswith("imagenette2-160.tgz")


@pytest.mark.parametrize("variable", ["CKA_PROBE_CACHE", "XDG_CACHE_HOME"])
def test_downloaded_data_sets_and_feature_files_live_in_separate_folders(tmp_path, monkeypatch, variable):
    from cka_probe.engine.cache import FeatureCache

    _no_download(monkeypatch)
    monkeypatch.delenv("CKA_PROBE_CACHE")
    monkeypatch.setenv(variable, str(tmp_path / "cache"))
    base = tmp_path / "cache" / ("" if variable == "CKA_PROBE_CACHE" else "cka-probe")
    _fake_imagenette(base / "datasets" / "imagenette", per_class=2)
    probe = load_probe_set("imagenette", n=4)
    assert probe.n == 4 and str((base / "datasets" / "imagenette").resolve()) in probe.source
    assert FeatureCache().directory == base / "features"


def test_imagenette_unknown_size(tmp_path):
    with pytest.raises(DataNotFoundError, match="unknown Imagenette size '224px'"):
        load_probe_set("imagenette:224px", root=tmp_path)
