"""The cluster shape on one machine: three real raylets, placement by resources, and a
spot node lost mid-task (issue 23).

``ray.cluster_utils.Cluster`` starts real raylets as separate Ray nodes, CPU only, that
declare what a KubeRay group would: the head and an on-demand "GPU" node carry
``ray.io/market-type=on-demand`` (the label the rendered worker groups carry), the spot
"GPU" node carries ``spot`` and a ``{"spot": 1}`` resource. The Serve app is the GPU
config's placement (its ``ray_actor_options``: Whisper and the LLM at 0.5 GPU each) run
with the CPU models, started by a real ``aipp serve --address``. The stateful parts get
a label selector for on-demand nodes, the rule a spot group needs (the shipped configs do
not carry it yet).

Then the spot node is removed (its raylet and every process on it killed, as in a reclaim)
while a task is in flight: every accepted task must still succeed exactly once, with one
webhook and a final ``succeeded`` event each.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.cluster_fixtures import BIN, REPO, free_port, stop_cluster
from tests.conftest import DATA
from tests.servers import LocalHTTPServer

pytestmark = pytest.mark.slow

MARKET = "ray.io/market-type"  # cluster/render/common.py MARKET_LABEL
GROUP = "ray.io/node-group"  # KubeRay's worker group name
STATEFUL = ("Ingress", "TaskRunner")
MODELS = ("Transcriber", "Summarizer")
CLIPS = [("jfk.flac", DATA / "jfk.flac"), ("hotwords.mp3", DATA / "hotwords.mp3")] * 2


def phase3_placement_on_cpu(path: Path) -> tuple[dict, Path]:
    """The phase 3 Serve config's placement, CPU-runnable.

    serve_config.yaml <- serve_config.gpu.yaml <- cluster/values.yaml's phase 3 overrides
    (label selectors, fallback, surge, drain), as `aipp cluster render` merges them. Kept:
    every deployment's ray_actor_options. Dropped: the GPU env (vLLM, CUDA) and the
    cluster's bind/auth/model overlay, so the CPU models run; one proxy, on the head (three
    nodes share one host's port).
    """
    from cluster.render import load_serve_config, load_values
    from cluster.render.serve_config import merge_serve_config

    base = yaml.safe_load((REPO / "serve_config.yaml").read_text())
    overrides = load_values()["serve_overrides"]["phase3"]
    cfg = merge_serve_config(load_serve_config(gpu=True), overrides)
    cfg["proxy_location"] = "HeadOnly"
    for app, base_app in zip(cfg["applications"], base["applications"], strict=True):
        app["runtime_env"] = base_app.get("runtime_env") or {}
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return cfg, path


def group_size(group: str) -> dict[str, float]:
    """A node of KubeRay worker group ``group`` as cluster/values.yaml sizes its pods (Ray
    sizes a pod's node from its limits), so test nodes are what the manifests deploy."""
    from cluster.render import load_values

    spec = load_values()["worker_groups"][group]
    cpu = str(spec["cpu"])
    cpus = float(cpu[:-1]) / 1000 if cpu.endswith("m") else float(cpu)
    return {"num_cpus": int(cpus), "num_gpus": int(spec.get("gpus", 0))}


def add_node(cluster, group: str, market: str, **node_args):
    """A raylet labelled like a pod of KubeRay worker group ``group`` on ``market``.

    Ray reserves the ``ray.io/`` label prefix and sets these two labels from
    RAY_NODE_TYPE_NAME and RAY_NODE_MARKET_TYPE at node start
    (ray/_private/resource_and_label_spec.py), which is how a KubeRay pod gets them.
    """
    os.environ["RAY_NODE_TYPE_NAME"], os.environ["RAY_NODE_MARKET_TYPE"] = group, market
    try:
        if cluster.head_node is None:
            cluster.add_node(**node_args)
            return cluster.head_node
        return cluster.add_node(**node_args)
    finally:
        del os.environ["RAY_NODE_TYPE_NAME"], os.environ["RAY_NODE_MARKET_TYPE"]


def _serve_details(dashboard: str) -> dict:
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard).get_serve_details()


def replica_nodes(dashboard: str) -> dict[str, list[str]]:
    """Deployment -> node ids of its RUNNING replicas."""
    app = _serve_details(dashboard)["applications"]["aipp"]
    return {
        name: [r["node_id"] for r in dep.get("replicas") or [] if r.get("state") == "RUNNING"]
        for name, dep in app["deployments"].items()
    }


def _events(url: str, task_id: str, out: list[dict]) -> None:
    """Follow a task's SSE stream to its end (the stream closes after the final event)."""
    for _ in range(20):  # the Ingress is not on the lost node, but be patient with blips
        try:
            with httpx.stream("GET", f"{url}/v1/tasks/{task_id}/events", timeout=400) as resp:
                for line in resp.iter_lines():
                    if line.startswith("data:"):
                        out.append(json.loads(line[5:]))
            if out and out[-1].get("status") in ("succeeded", "failed", "cancelled"):
                return
        except httpx.HTTPError:
            pass
        time.sleep(1)


def _status(url: str, task_id: str) -> dict:
    return httpx.get(f"{url}/v1/tasks/{task_id}", timeout=20).json()


def test_placement_and_losing_a_spot_node_mid_task(tmp_path, monkeypatch):
    from ray._private import ray_constants
    from ray.cluster_utils import Cluster

    from app.cli.deploy import SINGLE_NODE_ENV
    from app.core.ray_auth import ensure_ray_token

    ensure_ray_token()
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    # Every node on 127.0.0.1 (Ray would swap in the host's address: app/cli/deploy.py
    # _loopback_node); the nodes are still separate raylets.
    monkeypatch.setenv(SINGLE_NODE_ENV, "0")
    monkeypatch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)
    t0 = time.monotonic()
    temp_dir = Path(f"/tmp/amn-{os.getpid()}")  # short: Ray's unix socket paths are limited
    dash_port = free_port()
    common = {"node_ip_address": "127.0.0.1", "temp_dir": str(temp_dir)}
    # Cluster records the head's address under the process temp dir's ray/ (not the
    # node's temp_dir); a fresh TMPDIR, as in CI, does not have that folder yet.
    (Path(tempfile.gettempdir()) / "ray").mkdir(parents=True, exist_ok=True)
    cluster = Cluster()
    add_node(  # the head doubles as the CPU group (KubeRay's head has num-cpus 0)
        cluster,
        "cpu",
        "on-demand",
        **common,
        num_cpus=group_size("cpu")["num_cpus"],
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=dash_port,
    )
    dashboard = f"http://127.0.0.1:{dash_port}"
    proc = None
    passed = False
    hook = LocalHTTPServer(lambda req: (200, {}, b"ok"))
    try:
        # Sized like the pods: 3 CPUs, 1 GPU. (The Diarizer has no selector and may take
        # 0.2 CPU on a GPU node; 2 CPUs would then not fit a replacement Transcriber.)
        spot_size, ondemand_size = group_size("gpu-spot"), group_size("gpu-ondemand")
        assert spot_size["num_gpus"] == 1 and ondemand_size["num_gpus"] == 1
        spot = add_node(cluster, "gpu-spot", "spot", **common, **spot_size, resources={"spot": 1})
        ondemand = add_node(cluster, "gpu-ondemand", "on-demand", **common, **ondemand_size)
        cfg, cfg_path = phase3_placement_on_cpu(tmp_path / "serve_config.multinode.yaml")
        gpu_asks = {
            d["name"]: d["ray_actor_options"].get("num_gpus", 0)
            for d in cfg["applications"][0]["deployments"]
        }
        assert gpu_asks["Transcriber"] + gpu_asks["Summarizer"] <= 1  # they share one GPU
        assert gpu_asks["Transcriber"] > 0 and gpu_asks["Summarizer"] > 0

        port = free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIPP_")}
        env.update(
            RAY_ADDRESS=cluster.address,
            AIPP_DATA_DIR=str(tmp_path / "data"),
            AIPP_PORT=str(port),
            AIPP_DASHBOARD_PORT=str(dash_port),
            AIPP_AUTH="off",
            AIPP_WORKER_CONCURRENCY="1",
            AIPP_TASK_LEASE_S="6",
            AIPP_TASK_RETRY_BACKOFF_S="0.5",
            AIPP_WEBHOOK_BACKOFF_S="0.2",
            AIPP_URL_ALLOW='["127.0.0.1"]',
        )
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen(
                [str(BIN / "aipp"), "serve", "--address", cluster.address, "--config", cfg_path],
                env=env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 420
        while "ready in" not in log.read_text():
            assert proc.poll() is None, log.read_text()[-4000:]
            assert time.monotonic() < deadline, log.read_text()[-4000:]
            time.sleep(2)
        ready_s = time.monotonic() - t0

        # (a) Placement: both models on the spot GPU node (preferred), sharing its one GPU
        # by their fractions; the stateful parts on the CPU group, never on spot.
        nodes = replica_nodes(dashboard)
        head_id = cluster.head_node.node_id
        for name in MODELS:
            assert nodes[name] == [spot.node_id], (name, nodes)
        for name in STATEFUL:
            assert nodes[name] and spot.node_id not in nodes[name], (name, nodes)
            assert set(nodes[name]) == {head_id}, (name, nodes)

        # (b) Accept tasks, then lose the spot node while one is in flight.
        nonce = time.monotonic_ns()
        ids, streams, readers = [], {}, []
        for i, (name, path) in enumerate(CLIPS):
            r = httpx.post(
                f"{url}/v1/tasks",
                files={"file": (name, path.read_bytes())},
                data={
                    "webhook_url": f"{hook.url}/h",
                    "instruction": f"multinode {nonce} {i}",
                    # The first two are summarized; two more LLM calls would only add time.
                    "summarize": "true" if i < 2 else "false",
                },
                timeout=60,
            )
            assert r.status_code == 202, r.text
            task_id = r.json()["id"]
            ids.append(task_id)
            streams[task_id] = []
            reader = threading.Thread(
                target=_events, args=(url, task_id, streams[task_id]), daemon=True
            )
            reader.start()
            readers.append(reader)
        deadline = time.monotonic() + 120
        in_flight = None
        while in_flight is None:
            assert time.monotonic() < deadline, [_status(url, t)["status"] for t in ids]
            for task_id in ids:
                if _status(url, task_id)["status"] in ("transcribing", "summarizing"):
                    in_flight = task_id
                    break
            time.sleep(0.2)
        time.sleep(1.0)  # inside the model call, not at the claim
        stage = _status(url, in_flight)["status"]
        killed_at = time.monotonic()
        cluster.remove_node(spot, allow_graceful=False)  # its raylet and workers: gone

        finals = {}
        deadline = time.monotonic() + 300
        for task_id in ids:
            while True:
                body = _status(url, task_id)
                if body["status"] in ("succeeded", "failed", "cancelled"):
                    finals[task_id] = body
                    break
                assert time.monotonic() < deadline, (task_id, in_flight, stage, body)
                time.sleep(0.5)
        recovered_s = time.monotonic() - killed_at

        assert {t: b["status"] for t, b in finals.items()} == dict.fromkeys(ids, "succeeded")
        assert finals[in_flight]["attempts"] >= 2, finals[in_flight]  # it was retried
        # The models came back on the on-demand floor (the selector's fallback).
        nodes = replica_nodes(dashboard)
        for name in MODELS:
            assert nodes[name] and set(nodes[name]) <= {ondemand.node_id}, (name, nodes)

        # Exactly one webhook per task, for its success; no duplicate after a grace wait.
        deadline = time.monotonic() + 30
        while len(hook.requests) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(3)
        sent = [req.headers["webhook-id"] for req in hook.requests]
        assert sorted(sent) == sorted(f"msg_{t}_succeeded" for t in ids), sent
        # Every task's stream ended with its final event.
        for reader in readers:
            reader.join(30)
        for task_id in ids:
            assert streams[task_id], task_id
            assert streams[task_id][-1]["status"] == "succeeded", streams[task_id][-3:]

        print(
            f"\nmultinode: ready {ready_s:.0f}s, node lost while {stage}, "
            f"all {len(ids)} tasks done {recovered_s:.0f}s after, "
            f"in-flight task attempts {finals[in_flight]['attempts']}, "
            f"total {time.monotonic() - t0:.0f}s"
        )
        passed = True
    finally:
        if not passed:  # keep what explains it: Serve's and the nodes' logs
            keep = REPO / "tests" / "artifacts" / f"multinode-{int(time.time())}"
            try:
                ignore = shutil.ignore_patterns("sockets", "*.sock", "runtime_resources")
                shutil.copytree(temp_dir, keep, ignore=ignore, symlinks=True)
                shutil.copy(tmp_path / "serve.log", keep)
                print(f"\nlogs kept in {keep}")
            except OSError as exc:
                print(f"\ncould not keep the logs: {exc}")
        hook.stop()
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        try:
            cluster.shutdown()
        finally:
            stop_cluster(temp_dir)
