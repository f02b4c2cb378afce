"""The Ray/Serve settings `aipp serve` sets before it starts Ray (issue 23, idle cost),
and the local autoscaling cluster's node types from the one cluster description.

Both name things in Ray's code, which can be renamed between versions without an error:
an environment variable nobody reads is silently ignored. So each name is looked up in
the installed Ray itself.
"""

from __future__ import annotations

import re
from pathlib import Path

import ray

from app.core.ray_env import CLUSTER_ENV, RAY_DEFAULT_ENV, SERVE_ENV, apply_serve_env
from cluster.local import SPOT_RESOURCE, fake_autoscaling_config, node_type
from cluster.render import GPU_ONDEMAND, GPU_SPOT, load_values

RAY_DIR = Path(ray.__file__).parent


def _python_sources_mention(name: str) -> bool:
    pattern = re.compile(rf"[\"']{re.escape(name)}[\"']")
    for path in RAY_DIR.rglob("*.py"):
        if "tests" in path.parts:
            continue
        if pattern.search(path.read_text(encoding="utf-8", errors="ignore")):
            return True
    return False


def test_every_setting_is_one_this_ray_reads():
    core = RAY_DIR / "_raylet.so"
    blob = core.read_bytes()
    for name in SERVE_ENV:
        config = name.removeprefix("RAY_")
        if config.islower():
            # RAY_<name> sets a core config entry (ray_config_def.h), compiled in
            assert b"\0" + config.encode() + b"\0" in blob, name
        else:
            assert _python_sources_mention(name), name
    assert set(RAY_DEFAULT_ENV) <= set(SERVE_ENV)


def test_operator_values_win_and_the_rest_are_filled():
    environ = {"RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.2", "PATH": "/bin"}
    applied = apply_serve_env(environ)
    assert applied["RAY_SERVE_CONTROL_LOOP_INTERVAL_S"] == "0.2"
    for key, value in SERVE_ENV.items():
        if key != "RAY_SERVE_CONTROL_LOOP_INTERVAL_S":
            assert environ[key] == value
    assert environ["PATH"] == "/bin"


def test_local_node_types_are_the_worker_groups():
    values = load_values()
    spot, ondemand = node_type(values, GPU_SPOT), node_type(values, GPU_ONDEMAND)
    for group, t in ((GPU_SPOT, spot), (GPU_ONDEMAND, ondemand)):
        spec = values["worker_groups"][group]
        assert t["resources"]["CPU"] == int(spec["cpu"])
        assert t["resources"]["GPU"] == spec["gpus"]
        assert (t["min_workers"], t["max_workers"]) == (spec["min_replicas"], spec["max_replicas"])
    assert spot["resources"][SPOT_RESOURCE] == 1 and SPOT_RESOURCE not in ondemand["resources"]
    capped = node_type(values, GPU_SPOT, max_workers=2)
    assert capped["max_workers"] == 2


def test_fake_autoscaling_config_is_complete():
    cfg = fake_autoscaling_config(
        load_values(),
        {GPU_SPOT: 2},
        head_resources={"CPU": 2},
        gcs_address="127.0.0.1:1",
        idle_timeout_s=30,
    )
    assert cfg["provider"]["gcs_address"] == "127.0.0.1:1"
    assert cfg["idle_timeout_minutes"] == 0.5
    assert set(cfg["available_node_types"]) == {GPU_SPOT, "ray.head.default"}
    # the provider class it names exists in this Ray
    import importlib

    module, cls = cfg["provider"]["module"].rsplit(".", 1)
    assert getattr(importlib.import_module(module), cls).__name__ == "FakeMultiNodeProvider"


def test_every_ray_container_of_a_cluster_gets_the_idle_settings():
    """KubeRay pods start Ray themselves: the rendered manifests carry the settings, except
    the resource-load pull the autoscaler reads (a slower pull would delay scale-ups)."""
    from cluster.render import render_manifests

    assert "RAY_gcs_pull_resource_loads_period_milliseconds" not in CLUSTER_ENV
    assert CLUSTER_ENV and set(CLUSTER_ENV) < set(SERVE_ENV)
    containers = []

    def collect(node) -> None:
        if isinstance(node, dict):
            if node.get("name") in ("ray-head", "ray-worker") and "image" in node:
                containers.append(node)
            for value in node.values():
                collect(value)
        elif isinstance(node, list):
            for value in node:
                collect(value)

    import yaml

    for phase in (1, 2, 3):
        for text in render_manifests(phase).values():
            for doc in yaml.safe_load_all(text):
                collect(doc)
    assert len(containers) >= 6
    for c in containers:
        env = {e["name"]: e.get("value") for e in c.get("env", [])}
        assert {k: env.get(k) for k in CLUSTER_ENV} == CLUSTER_ENV, c["name"]
