"""The Ray executor runs each model on the job's ``analysis.device``, resolved on the worker, and records it."""

from __future__ import annotations

import pytest

from cka_probe.data import load_probe_set
from cka_probe.engine.executors import features_for_models
from cka_probe.engine.features import ExtractedFeatures, ModelFailure
from cka_probe.engine.ray_executor import _gpus_per_task
from cka_probe.errors import DeviceError
from cka_probe.jobs import parse_job_config, run_zoo

ray = pytest.importorskip("ray", reason='Ray is not installed (pip install -e ".[ray]"); the Ray executor is untested')

SPEC = {"source": "embedded", "n": 8, "seed": 0, "skip_bad": False}
CONFIG = {"weights": "random", "data": {"source": "embedded", "n": 8}, "models": ["test_resnet", "test_vit"]}


@pytest.fixture(scope="module")
def local_ray():
    """One local Ray instance for the module (the executor leaves an instance it did not start running)."""
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def _features(device, executor):
    config = parse_job_config(CONFIG, "zoo")
    settings = {m.display: config.settings_for(m.display) for m in config.models}
    probe = load_probe_set(**SPEC)
    return features_for_models(
        config.models, probe, settings, device=device, executor=executor, probe_spec=SPEC, progress=False
    )


def test_the_configured_device_reaches_each_worker(local_ray):
    # torch on this machine has no MPS backend: a worker that runs the model on mps fails as the local executor does
    on_ray, local = _features("mps", "ray"), _features("mps", "local")
    for label in ("test_resnet", "test_vit"):
        assert isinstance(on_ray[label], ModelFailure)
        assert (on_ray[label].error, on_ray[label].kind) == (local[label].error, local[label].kind)
        assert "mps" in on_ray[label].error


def test_the_device_each_model_ran_on_is_recorded(local_ray, tmp_path):
    config = parse_job_config({**CONFIG, "analysis": {"device": "cpu"}}, "zoo")
    result = run_zoo(config, output_dir=tmp_path / "out", executor="ray", cache=False, progress=False)
    assert {label: record["device"] for label, record in result.manifest["models"].items()} == {
        "test_resnet": "cpu",
        "test_vit": "cpu",
    }
    for extracted in _features("auto", "ray").values():  # auto: resolved on the worker, which has no GPU here
        assert isinstance(extracted, ExtractedFeatures)
        assert extracted.extra["model"]["device"] == "cpu"


@pytest.mark.parametrize("executor", ["local", "ray"])
def test_an_unknown_device_is_the_same_one_line_error_on_either_executor(executor):
    with pytest.raises(DeviceError, match=r"^unknown device 'gpu'; use --device auto, cpu, mps, cuda or cuda:N$"):
        _features("gpu", executor)


def test_a_task_asks_ray_for_a_gpu_only_when_its_device_needs_one():
    assert _gpus_per_task("cpu", cluster_gpus=4) == 0
    assert _gpus_per_task("mps", cluster_gpus=0) == 0
    assert _gpus_per_task("auto", cluster_gpus=0) == 0
    assert _gpus_per_task("auto", cluster_gpus=2) == 1
    assert _gpus_per_task("cuda", cluster_gpus=1) == 1
    assert _gpus_per_task("cuda:1", cluster_gpus=2) == 1


def test_cuda_on_a_cluster_without_gpus_is_refused_rather_than_left_waiting():
    with pytest.raises(
        DeviceError, match=r"^--device cuda:0 was asked for but the Ray cluster has no GPU; use --device cpu or auto$"
    ):
        _gpus_per_task("cuda:0", cluster_gpus=0)
