"""Autoscaling end to end on a fake multi-node autoscaling Ray cluster (issue 23).

The Ray autoscaler (v2, as the KubeRay manifests run it) with Ray's fake multi-node
provider launches and removes real raylets on this machine by node type. The node
types come from the one cluster description (``cluster/values.yaml`` ``worker_groups``
via :mod:`cluster.local`): the spot GPU group (3 CPUs, 1 GPU and a ``spot`` resource
per node; scale from 0), capped at ``--max-nodes`` for 2 cores.

The Serve app is a STAND-IN for the Transcriber, not the real model: its replicas ask
what the GPU config's Transcriber asks (``num_cpus``, ``num_gpus`` from
serve_config.gpu.yaml) plus the ``spot`` resource, and each request sleeps
``--work-s`` (standing in for GPU time; the GPU is the fake boundary here) after a
trivial bit of CPU work. Serve autoscales it on ongoing requests (queued at the handle
plus running in replicas), from 0 replicas.

Timeline, sampled every second: requests in flight (sent, not done), requests done,
replicas running / starting, spot nodes alive. Two runs in one go, same burst:

1. ``autoscaled``: up to ``--max-nodes`` spot nodes (replicas up to 2 per node);
2. ``one node``: the same app capped at one node's replicas (2), the baseline.

The burst must drain faster in (1); after it, replicas go away after Serve's
``downscale_delay_s`` and then nodes after the autoscaler's idle timeout.

    python -m bench.autoscaling                  # ~3-4 minutes on 2 cores
    python -m bench.autoscaling --requests 40 --max-nodes 2

Never runs ``ray stop`` (it would stop every Ray cluster on the host): it stops only
the processes of its own temp dir.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.overhead import machine  # noqa: E402

APP = "standin"


def start_autoscaling_head(temp_dir: Path, config: dict, port: int, dashboard_port: int) -> str:
    """`ray start --head` with the fake multi-node autoscaler (v2), on loopback."""
    from app.core.ray_auth import ensure_ray_token
    from cluster.local import FAKE_HEAD_NODE_ID

    ensure_ray_token()
    cfg_path = temp_dir.parent / f"{temp_dir.name}-autoscaler.json"
    cfg_path.write_text(json.dumps(config))
    head = config["available_node_types"]["ray.head.default"]["resources"]
    env = dict(
        os.environ,
        RAY_AUTH_MODE="token",
        RAY_FAKE_CLUSTER="1",
        AUTOSCALER_UPDATE_INTERVAL_S="1",
        RAY_enable_autoscaler_v2="1",
        RAY_CLOUD_INSTANCE_ID=FAKE_HEAD_NODE_ID,
        RAY_OVERRIDE_NODE_ID_FOR_TESTING=FAKE_HEAD_NODE_ID,
        RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER="0",  # node IPs stay 127.0.0.1 (app/cli/deploy.py)
    )
    cmd = [
        str(REPO / ".venv" / "bin" / "ray"),
        "start",
        "--head",
        f"--port={port}",
        "--node-ip-address=127.0.0.1",
        "--include-dashboard=false",
        f"--dashboard-port={dashboard_port}",  # its usage-stats head still starts
        f"--num-cpus={int(head['CPU'])}",
        f"--temp-dir={temp_dir}",
        f"--autoscaling-config={cfg_path}",
        "--disable-usage-stats",
    ]
    subprocess.run(cmd, check=True, env=env, capture_output=True, timeout=180)
    return f"127.0.0.1:{port}"


def standin_deployment(max_replicas: int, work_s: float, delays: dict):
    """The Transcriber stand-in, placed like the GPU config's Transcriber plus ``spot``."""
    import yaml
    from ray import serve

    from cluster.local import SPOT_RESOURCE

    gpu_cfg = yaml.safe_load((REPO / "serve_config.gpu.yaml").read_text())
    deps = {d["name"]: d for d in gpu_cfg["applications"][0]["deployments"]}
    asks = dict(deps["Transcriber"]["ray_actor_options"])
    options = {
        "num_cpus": asks.get("num_cpus", 1),
        "num_gpus": asks.get("num_gpus", 0.5),
        "resources": {SPOT_RESOURCE: 0.01},
    }

    @serve.deployment(
        name="TranscriberStandIn",
        ray_actor_options=options,
        max_ongoing_requests=2,
        autoscaling_config={
            "min_replicas": 0,
            "initial_replicas": 0,
            "max_replicas": max_replicas,
            "target_ongoing_requests": 1,
            **delays,
        },
    )
    class TranscriberStandIn:
        """STAND-IN, not the model: a little CPU, then ``work_s`` of waiting (GPU time)."""

        async def __call__(self, i: int) -> int:
            total = sum(k * k for k in range(20_000))  # trivial CPU work
            await asyncio.sleep(work_s)
            return i + (total & 0)

    return TranscriberStandIn.bind()


def spot_nodes() -> int:
    import ray

    from cluster.local import SPOT_RESOURCE

    return sum(1 for n in ray.nodes() if n["Alive"] and n["Resources"].get(SPOT_RESOURCE))


def replica_counts() -> tuple[int, int]:
    from ray import serve

    try:
        app = serve.status().applications[APP]
    except KeyError:
        return 0, 0
    states = next(iter(app.deployments.values())).replica_states if app.deployments else {}
    return int(states.get("RUNNING", 0)), int(states.get("STARTING", 0))


async def run_scenario(
    label: str, max_replicas: int, args: argparse.Namespace, delays: dict
) -> dict:
    """Deploy, wait ``--lead-s``, send the burst, follow until nodes are back to zero."""
    from ray import serve

    handle = serve.run(
        standin_deployment(max_replicas, args.work_s, delays), name=APP, route_prefix=None
    )
    timeline: list[dict] = []
    state = {"sent": 0, "done": 0}
    t0 = time.monotonic()
    marks: dict[str, float | None] = {"burst_sent": None, "drained": None}

    async def one(i: int) -> None:
        await handle.remote(i)
        state["done"] += 1

    async def sampler() -> None:
        while True:
            running, starting = await asyncio.to_thread(replica_counts)
            nodes = await asyncio.to_thread(spot_nodes)
            timeline.append(
                {
                    "t": round(time.monotonic() - t0, 1),
                    "in_flight": state["sent"] - state["done"],
                    "done": state["done"],
                    "replicas": running,
                    "starting": starting,
                    "spot_nodes": nodes,
                }
            )
            await asyncio.sleep(1)

    sampling = asyncio.create_task(sampler())
    await asyncio.sleep(args.lead_s)
    marks["burst_sent"] = round(time.monotonic() - t0, 1)
    state["sent"] = args.requests
    await asyncio.gather(*(one(i) for i in range(args.requests)))
    marks["drained"] = round(time.monotonic() - t0, 1)
    # Follow the scale-down: replicas to 0, then spot nodes to 0 (bounded).
    deadline = time.monotonic() + args.tail_s
    while time.monotonic() < deadline:
        await asyncio.sleep(1)
        last = timeline[-1] if timeline else {}
        if last.get("replicas") == 0 and last.get("starting") == 0 and last.get("spot_nodes") == 0:
            break
    await asyncio.sleep(1.5)
    sampling.cancel()
    serve.delete(APP)

    run = {
        "label": label,
        "max_replicas": max_replicas,
        "burst_sent_s": marks["burst_sent"],
        "drained_at_s": marks["drained"],
        "timeline": timeline,
    }
    return summarize(run)


def summarize(run: dict) -> dict:
    """The figures of one run, from its marks and timeline."""
    timeline, sent, drained = run["timeline"], run["burst_sent_s"], run["drained_at_s"]

    def first(pred, after: float) -> float | None:
        return next((s["t"] for s in timeline if s["t"] >= after and pred(s)), None)

    first_replica = first(lambda s: s["replicas"] >= 1, sent)
    first_node = first(lambda s: s["spot_nodes"] >= 1, sent)
    return {
        **{k: v for k, v in run.items() if k != "timeline"},
        "drain_s": round(drained - sent, 1),
        # the cold start (node launch + replica start) is in drain_s; not in serving_s
        "first_node_after_burst_s": _minus(first_node, sent),
        "first_replica_after_burst_s": _minus(first_replica, sent),
        "serving_s": _minus(drained, first_replica or sent),
        "peak_replicas": max(s["replicas"] for s in timeline),
        "peak_spot_nodes": max(s["spot_nodes"] for s in timeline),
        "replicas_zero_after_drain_s": _minus(
            first(lambda s: s["replicas"] == 0, drained), drained
        ),
        "nodes_zero_after_drain_s": _minus(first(lambda s: s["spot_nodes"] == 0, drained), drained),
        "timeline": timeline,
    }


def speedups(runs: list[dict]) -> dict:
    """One node's times over the autoscaled run's (> 1: autoscaling drained faster)."""
    a, b = runs
    return {
        "drain_speedup": round(b["drain_s"] / a["drain_s"], 2),
        "serving_speedup": round(b["serving_s"] / a["serving_s"], 2),
    }


def _minus(a: float | None, b: float) -> float | None:
    return None if a is None else round(a - b, 1)


def write_svg(runs: list[dict], path: Path) -> None:
    """Three panels (in flight, replicas, spot nodes) per run, side by side; by hand, so
    the bench needs no plotting library."""
    panel_w, panel_h, pad = 380, 110, 40
    rows = [
        ("in_flight", "requests in flight"),
        ("replicas", "replicas running"),
        ("spot_nodes", "spot nodes"),
    ]
    width = pad + len(runs) * (panel_w + pad)
    height = 30 + len(rows) * (panel_h + pad) + 20
    tmax = max(s["t"] for r in runs for s in r["timeline"]) or 1
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
    ]
    for ci, run in enumerate(runs):
        x0 = pad + ci * (panel_w + pad)
        out.append(
            f'<text x="{x0}" y="18" font-size="13" font-weight="bold">{run["label"]} '
            f"(max {run['max_replicas']} replicas): burst drained in {run['drain_s']} s</text>"
        )
        for ri, (key, title) in enumerate(rows):
            y0 = 30 + ri * (panel_h + pad)
            vmax = max(max(s[key] for r in runs for s in r["timeline"]), 1)
            out.append(
                f'<rect x="{x0}" y="{y0}" width="{panel_w}" height="{panel_h}" '
                'fill="none" stroke="#999"/>'
            )
            out.append(f'<text x="{x0 + 4}" y="{y0 + 13}">{title} (max {vmax})</text>')
            pts = " ".join(
                f"{x0 + panel_w * s['t'] / tmax:.1f},{y0 + panel_h * (1 - s[key] / vmax):.1f}"
                for s in run["timeline"]
            )
            out.append(
                f'<polyline points="{pts}" fill="none" stroke="#1f5fa8" stroke-width="1.6"/>'
            )
            for mark, colour in (("burst_sent_s", "#c33"),):
                mx = x0 + panel_w * (run[mark] or 0) / tmax
                out.append(
                    f'<line x1="{mx:.1f}" y1="{y0}" x2="{mx:.1f}" y2="{y0 + panel_h}" '
                    f'stroke="{colour}" stroke-dasharray="3,3"/>'
                )
            dx = x0 + panel_w * (run["burst_sent_s"] + run["drain_s"]) / tmax
            out.append(
                f'<line x1="{dx:.1f}" y1="{y0}" x2="{dx:.1f}" y2="{y0 + panel_h}" '
                'stroke="#2a2" stroke-dasharray="3,3"/>'
            )
        out.append(
            f'<text x="{x0}" y="{height - 8}">time (s, 0-{tmax:.0f}); red: burst sent, '
            "green: burst drained</text>"
        )
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--work-s", type=float, default=1.0)
    parser.add_argument("--max-nodes", type=int, default=2)
    parser.add_argument("--lead-s", type=float, default=3.0)
    parser.add_argument("--tail-s", type=float, default=90.0)
    parser.add_argument("--idle-timeout-s", type=float, default=10.0)
    parser.add_argument("--upscale-delay-s", type=float, default=2.0)
    parser.add_argument("--downscale-delay-s", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "autoscaling.json")
    parser.add_argument("--svg", type=Path, default=REPO / "docs" / "images" / "autoscaling.svg")
    args = parser.parse_args()

    # Every node on 127.0.0.1, in this driver too (app/cli/deploy.py _loopback_node).
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False

    from cluster.local import fake_autoscaling_config
    from cluster.render import GPU_SPOT, load_values
    from tests.cluster_fixtures import free_port, stop_cluster

    values = load_values()
    port = free_port()
    config = fake_autoscaling_config(
        values,
        {GPU_SPOT: args.max_nodes},
        head_resources={"CPU": 2},
        gcs_address=f"127.0.0.1:{port}",
        idle_timeout_s=args.idle_timeout_s,
    )
    # Scale from zero for the bench (values: spot min_replicas 0 already).
    config["available_node_types"][GPU_SPOT]["min_workers"] = 0
    temp_dir = Path(f"/tmp/aas-{os.getpid()}")
    (Path(tempfile.gettempdir()) / "ray").mkdir(parents=True, exist_ok=True)
    delays = {
        "upscale_delay_s": args.upscale_delay_s,
        "downscale_delay_s": args.downscale_delay_s,
        "downscale_to_zero_delay_s": args.downscale_delay_s,
    }
    results: dict = {
        "machine": machine(),
        "node_type": config["available_node_types"][GPU_SPOT],
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "svg")} | delays,
    }
    started = time.monotonic()
    try:
        address = start_autoscaling_head(temp_dir, config, port, free_port())
        os.environ["RAY_AUTH_MODE"] = "token"
        ray.init(address=address, namespace="serve", log_to_driver=False)
        from ray import serve

        serve.start(proxy_location="Disabled")
        per_node = 2  # the stand-in asks 0.5 GPU; a node has 1
        runs = [
            asyncio.run(run_scenario("autoscaled", per_node * args.max_nodes, args, delays)),
            asyncio.run(run_scenario("one node", per_node, args, delays)),
        ]
        results["runs"] = runs
        results.update(speedups(runs))
    finally:
        try:
            ray.shutdown()
        finally:
            stop_cluster(temp_dir)
    results["wall_s"] = round(time.monotonic() - started, 1)
    summary = {k: v for k, v in results.items() if k != "runs"}
    summary["runs"] = [{k: v for k, v in r.items() if k != "timeline"} for r in results["runs"]]
    print(json.dumps(summary, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    write_svg(results["runs"], args.svg)


if __name__ == "__main__":
    main()
