"""The Ray executor against a local Ray instance: same outputs as the local executor, clear errors."""

from __future__ import annotations

import time

import pandas as pd
import pytest

from cka_probe.analysis import parse_job_config, run_zoo
from cka_probe.analysis.ray_executor import RayUnavailableError

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]"); the Ray executor is untested')

CONFIG = {"weights": "random", "data": {"source": "embedded", "n": 8},
          "models": ["test_resnet", "test_vit", "no_such_model_zz"]}


def test_ray_outputs_equal_the_local_executors(tmp_path):
    config = parse_job_config(CONFIG, "zoo")
    on_ray = run_zoo(config, output_dir=tmp_path / "ray", executor="ray", cache=tmp_path / "ray-cache", progress=False)
    local = run_zoo(config, output_dir=tmp_path / "local", cache=tmp_path / "local-cache", progress=False)
    pd.testing.assert_frame_equal(on_ray.long, local.long)
    pd.testing.assert_frame_equal(on_ray.summary, local.summary)
    assert on_ray.manifest["executor"] == "ray"
    assert on_ray.models.set_index("label").loc["no_such_model_zz", "status"] == "failed"
    assert len(list((tmp_path / "ray-cache").glob("*.safetensors"))) == 2  # the workers filled the cache
    assert not ray.is_initialized()  # the local instance it started is shut down


def test_unreachable_cluster_is_a_clear_error_within_a_bounded_time(tmp_path):
    config = parse_job_config(CONFIG, "zoo")
    started = time.perf_counter()
    with pytest.raises(RayUnavailableError, match="cannot reach the Ray cluster at 127.0.0.1:9"):
        run_zoo(config, output_dir=tmp_path / "out", executor="ray", ray_address="127.0.0.1:9", progress=False)
    assert time.perf_counter() - started < 30
