"""Shared test set-up: every test gets its own feature cache directory, never the user's."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _private_feature_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("CKA_PROBE_CACHE", str(tmp_path_factory.mktemp("feature-cache")))


@pytest.fixture
def one_thread():
    """Tiny models gain nothing from intra-op threads, and on a busy 2-core machine they lose a lot."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def torch_threads(request):
    """Run a test with one torch thread and with two: CPU Grams run on one thread or on a pool of threads."""
    previous = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(previous)


@pytest.fixture
def forward_passes(monkeypatch):
    """The models whose features were computed (the figure and zoo jobs' one place that runs a model)."""
    calls = []
    from cka_probe.engine import features as features_module

    real = features_module.extract_features

    def counting(model, *args, **kwargs):
        calls.append(kwargs.get("desc"))
        return real(model, *args, **kwargs)

    monkeypatch.setattr(features_module, "extract_features", counting)
    return calls
