"""Shared test set-up: every test gets its own feature cache directory, never the user's."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CKA_PROBE_CACHE", str(tmp_path_factory.mktemp("feature-cache")))
