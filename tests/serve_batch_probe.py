"""A burst through the GPU Transcriber's batching and autoscaling settings, on CPU.

Run by tests/test_gpu_first_run.py as ``python -m tests.serve_batch_probe`` joined to the
session's Ray head (``RAY_ADDRESS``): a fresh driver, because Serve's handle-side
autoscaling metrics do not survive a ``ray.shutdown()`` / ``ray.init()`` in one process.
Prints one JSON line: the batch sizes and whether a second replica was asked for.
(That a queue beyond a batch asks for one is checked on Serve's policy itself.)

The deployment is a probe with no model: the Transcriber's ``@serve.batch`` settings
(AIPP_STT_BATCH_SIZE from serve_config.gpu.yaml, the decorator's wait), a batched pass
that takes as long as a GPU's, and the GPU config's ``max_ongoing_requests`` and
``autoscaling_config``, read from the real files.
"""

from __future__ import annotations

import asyncio
import json
import sys
import threading
import time
from pathlib import Path

from ray import serve

PROBE = "GpuBatchProbe"
APP = "gpu-batch-probe"
PASS_S = 0.5  # one batched GPU pass


def gpu_deployments() -> tuple[dict, dict]:
    """(deployments by name, runtime env vars) of the merged GPU Serve config."""
    from cluster.render import load_serve_config, serve_deployments
    from cluster.render.serve_config import _app

    cfg = load_serve_config(gpu=True)
    return serve_deployments(cfg), _app(cfg).get("runtime_env", {}).get("env_vars", {})


def stt_batch() -> tuple[int, float]:
    """(max_batch_size, batch_wait_timeout_s) of the GPU Transcriber's ``@serve.batch``."""
    from app.core.settings import Settings
    from deployments.transcriber import Transcriber

    _, env = gpu_deployments()
    size = int(env.get("AIPP_STT_BATCH_SIZE", Settings().stt_batch_size))
    return size, Transcriber.func_or_class._transcribe_batch._get_batch_wait_timeout_s()


@serve.deployment(name=PROBE, ray_actor_options={"num_cpus": 0})
class GpuBatchProbe:
    """The Transcriber's batching with a GPU pass's duration, and no model."""

    def __init__(self, max_batch_size: int, wait_s: float) -> None:
        self.sizes: list[int] = []
        self.decode.set_max_batch_size(max_batch_size)
        self.decode.set_batch_wait_timeout_s(wait_s)

    @serve.batch(max_batch_size=1, batch_wait_timeout_s=0.0)
    async def decode(self, items: list[int]) -> list[int]:
        self.sizes.append(len(items))
        await asyncio.sleep(PASS_S)
        return items

    async def __call__(self, item: int) -> int:
        return await self.decode(item)

    def batch_sizes(self) -> list[int]:
        return self.sizes


def serve_running() -> bool:
    import ray
    from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

    try:
        ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
    except ValueError:
        return False
    return True


def burst(handle, clients: int, seconds: float, until_upscale: bool) -> dict:
    """``clients`` callers, each sending again as soon as answered, for ``seconds``."""
    stop = time.monotonic() + seconds
    done = threading.Event()

    def client() -> None:
        while not done.is_set() and time.monotonic() < stop:
            handle.remote(1).result(timeout_s=120)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    asked, t0, states = False, time.monotonic(), []
    while time.monotonic() < stop and not (asked and until_upscale):
        dep = serve.status().applications[APP].deployments[PROBE]
        states.append(f"{time.monotonic() - t0:.0f}s {dep.status.value} {dict(dep.replica_states)}")
        asked = asked or sum(dep.replica_states.values()) > 1 or dep.status.value == "UPSCALING"
        time.sleep(0.5)
    done.set()
    for t in threads:
        t.join(130)
    return {"asked": asked, "took_s": round(time.monotonic() - t0, 1), "states": states[-6:]}


def controller_decisions() -> list[str]:
    """The Serve controller's scaling log lines for the probe, with the ongoing-request
    total each decision saw: what a failed check needs to tell a metrics artefact from
    a real queue."""
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs" / "serve"
    lines = []
    for log in sorted(logs.glob("controller_*.log")):
        for line in log.read_text(errors="replace").splitlines():
            if PROBE in line and ("Upscaling" in line or "Downscaling" in line):
                lines.append(line[-220:])
    return lines[-6:]


def main() -> None:
    import ray

    deps, _ = gpu_deployments()
    stt = deps["Transcriber"]
    batch, wait_s = stt_batch()
    auto = dict(stt["autoscaling_config"])

    ray.init(address="auto", log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    # Serve's HTTP options are fixed when Serve starts: one started here would leave a
    # later `aipp serve` on this cluster without a proxy on its port, so it goes again.
    # The probe is called through its handle, so it starts no proxy (whose start timed
    # out on a loaded machine).
    started_here = not serve_running()
    if started_here:
        serve.start(proxy_location="Disabled")
    probe = GpuBatchProbe.options(
        max_ongoing_requests=stt["max_ongoing_requests"],
        max_queued_requests=stt.get("max_queued_requests", -1),
        autoscaling_config=auto,
    )
    handle = serve.run(probe.bind(batch, wait_s), name=APP, route_prefix=None)
    try:
        # One batch of callers, long enough for Serve to push its metrics (every 10 s)
        # and wait out upscale_delay_s.
        one = burst(handle, batch, auto["upscale_delay_s"] + 20, until_upscale=False)
        sizes = handle.batch_sizes.remote().result(timeout_s=60)
        one["decisions"] = controller_decisions()
    finally:
        serve.delete(APP)
        if started_here:
            serve.shutdown()
    print(json.dumps({"batch": batch, "sizes": sizes, "one_batch": one}))


if __name__ == "__main__":
    main()
