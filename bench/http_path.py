"""The HTTP path on Ray Serve, against bare uvicorn, in one run (issue 23).

Targets, each at 10 and 100 connections (an aiohttp client, keep-alive, ``--seconds``
per point after a short warm-up), reporting req/s, p50 and p99:

- ``bare``: a FastAPI app with one health route under plain uvicorn (one process);
- ``trivial``: the same FastAPI app as a one-replica Serve ingress (Serve defaults);
- ``trivial+mor``: the same with ``max_ongoing_requests: 128`` (Serve's default is 5,
  so 100 connections queue in the proxy);
- ``trivial+mor-log``: the same plus ``logging_config.enable_access_log: false``;
- ``healthz``: our ``GET /healthz`` through the aipp app;
- ``status``: our task status read ``GET /v1/tasks/{id}`` (a task queued for later).

The trivial apps are extra applications in the same Serve config as ours, deployed by
the same ``aipp serve``, so every Serve target shares one proxy and one cluster. The
cluster-wide Serve flags (environment variables, read when Ray's processes start) need a
fresh cluster, so the run repeats the whole set once per ``--env-set``:

- ``default``: Ray 2.60's defaults;
- ``aipp``: the flags ``aipp serve`` sets when it starts Ray (app/cli/serve.py
  ``SERVE_ENV``);
- ``throughput``: ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` (direct ingress, gRPC between
  proxy and replicas, user code and router on the main loop, GC frozen at start); with
  direct ingress each ingress replica also answers HTTP on its own port, measured as
  ``trivial@replica``.

The machine is shared with other work: compare within one run, as ratios.

    python -m bench.http_path                         # every env set, ~6-8 minutes
    python -m bench.http_path --env-set default --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TRIVIAL_APPS = {
    "trivial": {},
    "trivial+mor": {"max_ongoing_requests": 128},
    "trivial+mor-log": {
        "max_ongoing_requests": 128,
        "logging_config": {"enable_access_log": False},
    },
}


async def load(url: str, conns: int, seconds: float, warmup: float = 1.0) -> dict:
    """``conns`` keep-alive connections hammering ``url`` for ``seconds`` after a warm-up.

    Throughput counts the responses that arrive inside the window, whenever their request
    started (a slow target is not undercounted); requests still open at its end are
    cancelled.
    """
    import aiohttp

    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=conns, force_close=False)
    timeout = aiohttp.ClientTimeout(total=120)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        measure_from = time.perf_counter() + warmup
        stop = measure_from + seconds

        async def worker() -> None:
            nonlocal errors
            while True:
                t = time.perf_counter()
                try:
                    async with session.get(url) as resp:
                        await resp.read()
                        ok = resp.status == 200
                except (TimeoutError, aiohttp.ClientError):
                    ok = False
                done = time.perf_counter()
                if measure_from <= done <= stop:
                    if ok:
                        latencies.append(done - t)
                    else:
                        errors += 1

        tasks = [asyncio.create_task(worker()) for _ in range(conns)]
        await asyncio.sleep(stop - time.perf_counter())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    lat = sorted(latencies)
    n = len(lat)
    return {
        "conns": conns,
        "rps": round(n / seconds, 1),
        "p50_ms": round(1000 * lat[n // 2], 1) if n else None,
        "p99_ms": round(1000 * lat[min(n - 1, int(n * 0.99))], 1) if n else None,
        "mean_ms": round(1000 * statistics.fmean(lat), 1) if n else None,
        "errors": errors,
    }


def start_bare(port: int) -> subprocess.Popen:
    code = (
        "import uvicorn; from deployments.bench_trivial import health_app; "
        f"uvicorn.run(health_app(), host='127.0.0.1', port={port}, log_level='warning')"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO))
    )
    _wait_http(f"http://127.0.0.1:{port}/health", 60)
    return proc


def _wait_http(url: str, timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not answer in {timeout_s} s")


# Our Ingress as serve_config.yaml had it before this benchmark (the "default" env set
# runs it, so before and after are measured in one run).
INGRESS_BEFORE = {"max_ongoing_requests": 64}


def serve_config_with_trivial(path: Path, ingress: dict | None = None) -> Path:
    """serve_config.yaml (our Ingress overridden by ``ingress``) plus the trivial apps,
    each on its own route prefix."""
    import yaml

    cfg = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    for dep in cfg["applications"][0]["deployments"]:
        if dep["name"] == "Ingress" and ingress:
            dep.update(copy.deepcopy(ingress))
    for i, (name, opts) in enumerate(TRIVIAL_APPS.items()):
        dep = {"name": "Trivial", **copy.deepcopy(opts)}
        cfg["applications"].append(
            {
                "name": name.replace("+", "-"),
                "route_prefix": f"/t{i}",
                "import_path": "deployments.bench_trivial:trivial_app",
                "runtime_env": {},
                "deployments": [dep],
            }
        )
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def direct_ingress_port(app_name: str, temp_dir: Path) -> int | None:
    """The HTTP port a trivial replica serves itself on (direct ingress), if any."""
    import psutil

    for proc in psutil.process_iter(["name", "cmdline"]):
        try:
            if f"ServeReplica:{app_name}:" not in (proc.info["name"] or "") and not any(
                f"ServeReplica:{app_name}:" in part for part in proc.info["cmdline"] or []
            ):
                continue
            for conn in proc.net_connections(kind="tcp"):
                if conn.status == psutil.CONN_LISTEN and 30000 <= conn.laddr.port <= 31000:
                    return conn.laddr.port
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


def env_sets() -> dict[str, dict[str, str]]:
    from app.core.ray_env import RAY_DEFAULT_ENV, SERVE_ENV

    return {
        "default": dict(RAY_DEFAULT_ENV),
        "aipp": dict(SERVE_ENV),
        "throughput": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
        # the same without direct ingress (whose replicas hold a 30 s minimum drain)
        "throughput-proxy": {
            "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
            "RAY_SERVE_ENABLE_DIRECT_INGRESS": "0",
        },
    }


def run_env_set(name: str, env: dict[str, str], args: argparse.Namespace, bare_url: str) -> dict:
    from bench.idle_cpu import queue_waiting_tasks, start_head_with_env
    from tests.cluster_fixtures import stop_cluster, stop_service

    tmp = Path(tempfile.mkdtemp(prefix="aipp-http-"))
    temp_dir = Path(f"/tmp/ahp-{os.getpid()}-{name}")
    cluster = start_head_with_env(temp_dir, env)
    out: dict = {"env": env, "targets": {}}
    try:
        ingress = INGRESS_BEFORE if name == "default" else None
        out["ingress"] = ingress or "serve_config.yaml"
        cfg = serve_config_with_trivial(tmp / "serve_config.bench.yaml", ingress)
        url, proc = start_aipp(cluster, tmp, cfg)
        try:
            task_id = queue_waiting_tasks(tmp / "data", 1, tenant="local")[0]
            targets = {"bare": f"{bare_url}/health"}
            for i, app in enumerate(TRIVIAL_APPS):
                targets[app] = f"{url}/t{i}/health"
            targets["healthz"] = f"{url}/healthz"
            targets["status"] = f"{url}/v1/tasks/{task_id}"
            port = direct_ingress_port("trivial", temp_dir)
            if port:
                targets["trivial@replica"] = f"http://127.0.0.1:{port}/health"
            for target, url in targets.items():
                try:
                    _wait_http(url, 120)
                except RuntimeError as exc:  # record it, measure the rest
                    out["targets"][target] = {"error": str(exc)}
                    continue
                out["targets"][target] = [
                    asyncio.run(load(url, c, args.seconds)) for c in (10, 100)
                ]
                print(name, target, out["targets"][target], flush=True)
        finally:
            stop_service(proc)
    finally:
        stop_cluster(temp_dir)
    return out


def start_aipp(cluster, tmp: Path, cfg: Path) -> tuple[str, subprocess.Popen]:
    """``aipp serve --address ... --config cfg`` (tests/cluster_fixtures.start_service,
    with our config), auth off; ready when /readyz answers."""
    from tests.cluster_fixtures import BIN, free_port

    port = free_port()
    env = cluster.env()
    env.update(
        AIPP_DATA_DIR=str(tmp / "data"),
        AIPP_PORT=str(port),
        AIPP_DASHBOARD_PORT=cluster.dashboard_url.rsplit(":", 1)[1],
        AIPP_AUTH="off",
    )
    log = (tmp / "serve.log").open("w")
    proc = subprocess.Popen(
        [str(BIN / "aipp"), "serve", "--address", cluster.gcs_address, "--config", str(cfg)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"aipp serve exited: {(tmp / 'serve.log').read_text()[-3000:]}")
        try:
            _wait_http(f"{url}/readyz", 5)
            return url, proc
        except RuntimeError:
            time.sleep(2)
    proc.terminate()
    raise RuntimeError("aipp serve not ready in 600 s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument(
        "--env-set", action="append", choices=["default", "aipp", "throughput", "throughput-proxy"]
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "http_path.json")
    args = parser.parse_args()

    from bench.overhead import machine
    from tests.cluster_fixtures import free_port

    sets = env_sets()
    chosen = args.env_set or ["default", "aipp", "throughput"]
    results: dict = {"machine": machine(), "seconds_per_point": args.seconds, "runs": {}}
    bare_port = free_port()
    bare = start_bare(bare_port)
    try:
        for name in chosen:
            results["runs"][name] = run_env_set(
                name, sets[name], args, f"http://127.0.0.1:{bare_port}"
            )
    finally:
        bare.terminate()
        bare.wait(timeout=10)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
