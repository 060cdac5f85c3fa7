"""The Ray executor against a local Ray instance: same outputs as the local executor, clear errors."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from cka_probe.engine import ray_executor
from cka_probe.engine.ray_executor import CONNECT_TIMEOUT_S, RayUnavailableError, task_name
from cka_probe.jobs import parse_job_config, run_zoo

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]"); the Ray executor is untested')

# The third model passes the pre-flight checks (its name resolves) and fails in its worker: its pretrained weights
# cannot be had offline (HF_HUB_OFFLINE, set for the workers by the fixture below, and an empty HF_HOME).
CONFIG = {
    "weights": "random",
    "data": {"source": "embedded", "n": 8},
    "models": ["test_resnet", "test_vit", {"name": "test_convnext", "weights": "pretrained"}],
}


@pytest.fixture(autouse=True)
def _hub_offline(monkeypatch, tmp_path):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))


def test_ray_outputs_equal_the_local_executors(tmp_path):
    config = parse_job_config(CONFIG, "zoo")
    on_ray = run_zoo(config, output_dir=tmp_path / "ray", executor="ray", cache=tmp_path / "ray-cache", progress=False)
    local = run_zoo(config, output_dir=tmp_path / "local", cache=tmp_path / "local-cache", progress=False)
    pd.testing.assert_frame_equal(on_ray.long, local.long)
    pd.testing.assert_frame_equal(on_ray.summary, local.summary)
    assert on_ray.manifest["executor"] == "ray"
    assert on_ray.models.set_index("label").loc["test_convnext", "status"] == "failed"
    assert "offline" in on_ray.models.set_index("label").loc["test_convnext", "error"]
    assert len(list((tmp_path / "ray-cache").glob("*.safetensors"))) == 2  # the workers filled the cache
    assert not ray.is_initialized()  # the local instance it started is shut down


def test_unreachable_cluster_is_a_clear_error_after_a_bounded_wait(tmp_path, monkeypatch):
    timeouts = []
    real = socket.create_connection

    def recording(address, timeout=None, **kwargs):
        timeouts.append(timeout)
        return real(address, timeout=timeout, **kwargs)

    monkeypatch.setattr(ray_executor.socket, "create_connection", recording)
    config = parse_job_config(CONFIG, "zoo")
    with pytest.raises(RayUnavailableError, match="cannot reach the Ray cluster at 127.0.0.1:9") as info:
        run_zoo(config, output_dir=tmp_path / "out", executor="ray", ray_address="127.0.0.1:9", progress=False)
    assert "\n" not in str(info.value)
    assert timeouts == [CONNECT_TIMEOUT_S]  # one connection attempt, which gives up after CONNECT_TIMEOUT_S


def _workers_running(name: str) -> list[int]:
    """Pids of the processes whose title is Ray's ``ray::NAME`` (a worker while it runs that task)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                title = (entry / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace").rstrip()
            except OSError:
                continue
            if title == f"ray::{name}":
                pids.append(int(entry.name))
    return pids


class _WorkerKiller(threading.Thread):
    """SIGKILLs the worker running a model's task: ``budget[label]`` times (``None``: every time)."""

    def __init__(self, budget: dict[str, int | None]) -> None:
        super().__init__(daemon=True)
        self.budget, self.killed, self.halt = budget, Counter(), threading.Event()

    def run(self) -> None:
        while not self.halt.wait(0.02):
            for label, budget in self.budget.items():
                if budget is not None and self.killed[label] >= budget:
                    continue
                for pid in _workers_running(task_name(label)):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        continue
                    self.killed[label] += 1


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/cmdline").exists(), reason="finds Ray workers by their /proc title")
def test_a_killed_worker_is_retried_and_a_model_whose_worker_always_dies_is_recorded_as_failed(tmp_path, monkeypatch):
    monkeypatch.setattr(ray_executor, "MAX_RETRIES", 1)  # each try starts a new worker process: keep them few
    config = parse_job_config({**CONFIG, "models": ["test_resnet", "test_vit", "test_convnext"]}, "zoo")
    killer = _WorkerKiller({"test_resnet": 1, "test_vit": None})
    killer.start()
    try:
        run_zoo(config, output_dir=tmp_path / "out", executor="ray", cache=tmp_path / "cache", progress=False)
    finally:
        killer.halt.set()
        killer.join()
    assert killer.killed == {"test_resnet": 1, "test_vit": ray_executor.MAX_RETRIES + 1}
    models = pd.read_csv(tmp_path / "out" / "models.csv").set_index("label")
    assert models.loc["test_resnet", "status"] == "ok"  # its second try ran
    assert models.loc["test_vit", "status"] == "failed"
    assert f"died on each of {ray_executor.MAX_RETRIES + 1} tries" in models.loc["test_vit", "error"]
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert [f["label"] for f in manifest["failures"]] == ["test_vit"]
    assert manifest["failures"][0]["error_type"] == "WorkerCrashedError"
    assert list(manifest["models"]) == ["test_resnet", "test_convnext"] and manifest["pairs"] == 1
    assert not ray.is_initialized()


def test_flattened_grams_over_many_batches_come_back_by_reference_on_this_machine(tmp_path):
    # The workers spool each batch's Grams into the cache; with Ray on this machine the driver gets references to
    # those files (read batch by batch, O(L b^2)), not the lists; the zoo's tables equal the local executor's.
    from cka_probe.data import load_probe_set
    from cka_probe.engine.cache import FeatureCache
    from cka_probe.engine.features import FeatureSettings, ModelRequest
    from cka_probe.engine.spool import SpooledGrams

    spec = {"source": "embedded", "n": 16, "seed": 0, "skip_bad": False}
    probe = load_probe_set(**spec)
    request = ModelRequest("test_resnet", weights="random")
    settings = {request.display: FeatureSettings(pool="flatten", batch_size=8)}
    results = ray_executor.ray_features_for_models(
        [request], probe, spec, settings, cache=FeatureCache(tmp_path / "cache"), address=None, progress=False
    )
    values = list(results[request.display].features.values())
    assert values and all(isinstance(v, SpooledGrams) and len(v) == 2 for v in values)
    assert all(f.parent == tmp_path / "cache" for f in values[0].spool.files)
    assert values[0][1].shape == (8, 8)

    flat = {**CONFIG, "models": ["test_resnet", "test_vit"], "data": {"source": "embedded", "n": 16, "batch_size": 8}}
    flat["analysis"] = {"pool": "flatten", "estimator": "minibatch"}
    config = parse_job_config(flat, "zoo")
    on_ray = run_zoo(config, output_dir=tmp_path / "ray", executor="ray", cache=tmp_path / "ray-cache", progress=False)
    local = run_zoo(config, output_dir=tmp_path / "local", cache=tmp_path / "local-cache", progress=False)
    pd.testing.assert_frame_equal(on_ray.long, local.long)


class _SilentListener:
    """A local port that accepts connections and never answers: an open port where no Ray head runs (a firewall,
    another service), which made ray.init retry for 20 s and more, printing a line per try."""

    def __enter__(self):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.accepted = []
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()
        return self

    def _accept(self):
        with contextlib.suppress(OSError):
            while True:
                self.accepted.append(self.server.accept()[0])

    def __exit__(self, *exc):
        self.server.close()
        for conn in self.accepted:
            conn.close()


def _closed_port() -> int:
    with socket.create_server(("127.0.0.1", 0)) as server:
        return server.getsockname()[1]  # closed when the block ends: nothing listens there


def test_a_closed_port_fails_within_the_stated_bound(tmp_path):
    config = parse_job_config(CONFIG, "zoo")
    address = f"127.0.0.1:{_closed_port()}"
    started = time.monotonic()
    with pytest.raises(RayUnavailableError, match=f"cannot reach the Ray cluster at {address}"):
        run_zoo(config, output_dir=tmp_path / "out", executor="ray", ray_address=address, progress=False)
    assert time.monotonic() - started < CONNECT_TIMEOUT_S
    assert not (tmp_path / "out").exists()


@pytest.mark.slow
def test_an_open_port_where_no_ray_head_answers_fails_within_the_stated_bound(tmp_path):
    config = parse_job_config(CONFIG, "zoo")
    with _SilentListener() as listener:
        address = f"127.0.0.1:{listener.port}"
        started = time.monotonic()
        with pytest.raises(RayUnavailableError, match=f"no Ray cluster answered at {address} within 10 s") as info:
            run_zoo(config, output_dir=tmp_path / "out", executor="ray", ray_address=address, progress=False)
        elapsed = time.monotonic() - started
    assert CONNECT_TIMEOUT_S - 1 < elapsed < CONNECT_TIMEOUT_S + 3  # the deadline, plus loading the probe images
    assert "\n" not in str(info.value)
    assert not ray.is_initialized()


@pytest.mark.slow
@pytest.mark.parametrize("where", ["closed", "silent"])
def test_the_command_line_prints_one_line_and_no_ray_log(tmp_path, where):
    config = tmp_path / "zoo.yaml"
    config.write_text(json.dumps(CONFIG))  # JSON is YAML
    with _SilentListener() as listener:
        port = listener.port if where == "silent" else _closed_port()
        args = [sys.executable, "-m", "cka_probe", "zoo", str(config), "--out", str(tmp_path / "out")]
        args += ["--executor", "ray", "--address", f"127.0.0.1:{port}", "--no-progress"]
        env = {**os.environ, "CKA_PROBE_CACHE": str(tmp_path / "cache")}
        quiet = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
        verbose = subprocess.run([*args, "--verbose"], capture_output=True, text=True, env=env, timeout=120)
    assert quiet.returncode == 2 and quiet.stdout == ""
    assert quiet.stderr.count("\n") == 1 and quiet.stderr.startswith("Error: "), quiet.stderr
    assert "gcs_client" not in quiet.stderr and "rpc_client" not in quiet.stderr
    assert verbose.returncode == 2 and "Traceback" in verbose.stderr
    assert verbose.stderr.rstrip().splitlines()[-1] == quiet.stderr.rstrip()
