"""Ray executor for zoo jobs: one Ray task per model's feature extraction, pairs computed on the driver.

Each task loads the probe set itself from the same source (and checks that its image list and the
images' content hash to the driver's), builds its model, runs it on the job's device (``analysis.device``,
resolved on the worker: ``auto`` is a GPU when the worker has one), and writes the features into the feature cache
directory before returning them; each model's provenance records the device it ran on. A task asks Ray for one GPU
when its device is ``cuda`` or ``cuda:N`` (Ray picks the GPU, so N does not choose a worker's GPU) or when it is
``auto`` and the cluster has GPUs; ``cuda`` on a cluster without GPUs is refused before any task starts.
Tasks are named ``cka-probe features LABEL`` (Ray's dashboard and the worker's process title show it).

A task whose worker dies (killed, out of memory, node lost) is run again, up to :data:`MAX_RETRIES`
times (Ray's ``max_retries``); when every try dies, or the task fails in Ray in any other way, the model
is recorded as failed, as a model that cannot be built is, and the other models go on. On a multi-node cluster,
every node must see the same data source path and, for reuse across jobs, the same cache directory
(a shared filesystem); see the README's "Model zoos on a Ray cluster".

An ``address`` is checked before the job uses it: its port must accept a connection and a Ray cluster must
answer there (a child process connects and leaves, and is killed at the deadline), all within
:data:`CONNECT_TIMEOUT_S`; otherwise one :class:`RayUnavailableError` line, Ray's own output kept for ``--verbose``.

Ray is an optional extra: ``pip install "cka-probe[ray]"``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from typing import Any

from .._device import parse_device
from ..errors import CKAProbeError, DeviceError
from .cache import FeatureCache
from .features import ExtractedFeatures, FeatureSettings, ModelFailure, ModelRequest, record_device, safe_model_features
from .spool import SpooledGrams

__all__ = ["CONNECT_TIMEOUT_S", "MAX_RETRIES", "RayUnavailableError", "ray_features_for_models", "task_name"]

#: Seconds from the first connection attempt to the error, when no Ray cluster answers at ``--address``.
CONNECT_TIMEOUT_S = 10.0

#: How many times a task whose worker died is run again before its model is recorded as failed.
MAX_RETRIES = 2


class RayUnavailableError(CKAProbeError):
    """Ray is not installed, or the cluster cannot be reached.

    Attributes:
        details: what Ray printed while trying (shown by the command line with ``--verbose``), or ``""``.
    """

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


def task_name(label: str) -> str:
    """The Ray task name of a model's feature extraction (shown as the worker's process title, ``ray::NAME``)."""
    return f"cka-probe features {label}"


def _extract_task(
    request: ModelRequest,
    probe_spec: dict[str, Any],
    probe_sha: tuple[str, str],
    settings: FeatureSettings,
    cache_dir: str | None,
    device: str,
    same_machine: bool = False,
):
    """Runs on a Ray worker: one model's features (or its failure record) on ``device`` (a :func:`parse_device` name,
    resolved here; ``cuda:N`` is the GPU Ray gave this task). ``same_machine``: the driver runs on this machine, so
    Grams spooled into the cache go back as references to the cache's files, not by value."""
    from .._device import resolve_device
    from ..data import load_probe_set

    probe = load_probe_set(**probe_spec)
    if (probe.image_list_sha256, probe.content_sha256) != probe_sha:
        return ModelFailure(
            request.display,
            f"this worker's probe images differ from the driver's ({probe.source}); every node must see the same data",
            "ProbeMismatch",
        )
    try:
        resolved = resolve_device("cuda" if device.startswith("cuda") else device)
    except DeviceError as exc:
        return ModelFailure(request.display, str(exc), type(exc).__name__)
    result = safe_model_features(
        request, probe, settings, device=resolved, cache=FeatureCache(cache_dir) if cache_dir else None, progress=False
    )
    record_device(result, resolved)
    if isinstance(result, ExtractedFeatures):
        result.to("cpu")
        if same_machine and cache_dir is not None:
            for value in result.features.values():
                if isinstance(value, SpooledGrams) and value.spool.directory is None:  # files of a cache entry
                    value.spool.shared = True
    return result


def ray_features_for_models(
    requests: Sequence[ModelRequest],
    probe,
    probe_spec: dict[str, Any],
    settings: dict[str, FeatureSettings],
    *,
    cache: FeatureCache | None,
    address: str | None,
    progress: bool = True,
    device: str = "auto",
) -> dict[str, Any]:
    """Each model's features from a Ray task on ``device`` (``analysis.device``); the dictionary the local executor
    returns, in request order."""
    device = parse_device(device)
    try:
        import ray
    except ImportError:
        raise RayUnavailableError(
            'Ray is not installed; pip install "cka-probe[ray]" or use --executor local'
        ) from None
    from tqdm.auto import tqdm

    started_here = not ray.is_initialized()
    if started_here:
        _connect(ray, address)
    try:
        task = ray.remote(
            num_gpus=_gpus_per_task(device, ray.cluster_resources().get("GPU", 0)), max_retries=MAX_RETRIES
        )(_extract_task)
        cache_dir = str(cache.directory) if cache is not None else None
        here = ray.get_runtime_context().get_node_id()  # every live node is this one: workers share its files
        same_machine = all(node["NodeID"] == here for node in ray.nodes() if node.get("Alive"))
        probe_sha = (probe.image_list_sha256, probe.content_sha256)
        futures = {
            task.options(name=task_name(r.display)).remote(
                r, probe_spec, probe_sha, settings[r.display], cache_dir, device, same_machine
            ): r.display
            for r in requests
        }
        results: dict[str, Any] = {}
        pending = list(futures)
        with tqdm(total=len(pending), desc="models (ray)", unit="model", disable=not progress) as bar:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                label = futures[done[0]]
                try:
                    results[label] = ray.get(done[0])
                except ray.exceptions.RayError as exc:  # the worker died on every try, or Ray lost the task
                    results[label] = _ray_failure(ray, label, exc)
                bar.update(1)
        return {r.display: results[r.display] for r in requests}
    finally:
        if started_here:
            ray.shutdown()


def _gpus_per_task(device: str, cluster_gpus: float) -> int:
    """The GPUs a task on ``device`` asks Ray for: one for ``cuda``/``cuda:N`` and for ``auto`` on a cluster with
    GPUs, else none. ``cuda`` on a cluster without GPUs would wait for ever: refused."""
    if device.startswith("cuda"):
        if cluster_gpus <= 0:
            raise DeviceError(
                f"--device {device} was asked for but the Ray cluster has no GPU; use --device cpu or auto"
            )
        return 1
    return 1 if device == "auto" and cluster_gpus > 0 else 0


def _ray_failure(ray, label: str, exc: Exception):

    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(
        exc, ray.exceptions.WorkerCrashedError | ray.exceptions.OutOfMemoryError | ray.exceptions.NodeDiedError
    ):
        detail = (
            f"its Ray worker died on each of {MAX_RETRIES + 1} tries ({type(exc).__name__}: {detail}); "
            "rerun the job to try it again"
        )
    return ModelFailure(label, detail, type(exc).__name__)


def _connect(ray, address: str | None) -> None:
    if address is None:
        ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
        return
    deadline = time.monotonic() + CONNECT_TIMEOUT_S
    host_port = address.split("://", 1)[-1]
    if address != "auto" and ":" in host_port:
        host, port = host_port.rsplit(":", 1)
        try:
            socket.create_connection((host, int(port)), timeout=CONNECT_TIMEOUT_S).close()
        except (OSError, ValueError) as exc:
            raise RayUnavailableError(
                f"cannot reach the Ray cluster at {address} ({exc.strerror or exc}); "
                "check the address (ray status on the head node) or drop --address to run Ray locally"
            ) from None
    _probe_cluster(address, deadline)
    try:
        ray.init(address=address, log_to_driver=False, configure_logging=False)
    except (ConnectionError, RuntimeError, TimeoutError) as exc:
        raise RayUnavailableError(
            f"cannot connect to the Ray cluster at {address}: {str(exc).splitlines()[0]}"
        ) from None


# Connects to the cluster and leaves at once; run in a child process, whose output is kept (Ray's C++ client
# writes its retries straight to the terminal) and which is killed at the deadline (Ray retries for 20 s or more).
_PROBE = """
import sys
import ray
ray.init(address=sys.argv[1], log_to_driver=False, configure_logging=False, logging_level="ERROR")
ray.shutdown()
"""


def _probe_cluster(address: str, deadline: float) -> None:
    """Fail with one line, by ``deadline``, when no Ray cluster answers at ``address`` (an open port is not enough:
    something else may listen there). What Ray printed meanwhile goes with the error (``--verbose`` shows it)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", _PROBE, address],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: killed whole at the deadline
    )
    try:
        log, _ = proc.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        log, _ = proc.communicate()
        raise RayUnavailableError(
            f"no Ray cluster answered at {address} within {CONNECT_TIMEOUT_S:g} s (something may listen there, "
            "but not a Ray head); check the address (ray status on the head node) or drop --address to run Ray "
            "locally",
            details=log,
        ) from None
    if proc.returncode != 0:
        lines = [line.strip() for line in log.splitlines() if line.strip()]
        errors = [line for line in lines if "Error" in line.split(":", 1)[0]]  # Python's last line, "XError: ..."
        reason = errors[-1] if errors else (lines[-1] if lines else f"exit code {proc.returncode}")
        raise RayUnavailableError(
            f"cannot connect to the Ray cluster at {address} ({reason}); check the address (ray status on the head "
            "node) or drop --address to run Ray locally",
            details=log,
        )
