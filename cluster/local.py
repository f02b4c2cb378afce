"""The cluster description's third use: node types for a local autoscaling Ray cluster.

The KubeRay worker groups (``cluster/values.yaml`` ``worker_groups``: size, GPUs,
min/max replicas) become node types of Ray's fake multi-node provider
(``ray.autoscaler._private.fake_multi_node``), which launches and removes real raylets
on this machine by node type. A spot group's node also carries a ``spot`` custom
resource, so a replica that asks for it lands only on spot nodes, as a replica with a
``ray.io/market-type: spot`` label selector would on Kubernetes.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.render.common import GPU_SPOT

SPOT_RESOURCE = "spot"
# The head's node id under autoscaler v2 with the fake provider (ray.cluster_utils).
FAKE_HEAD_NODE_ID = "fffffffffffffffffffffffffffffffffffffffffffffffffff00000"


def _cpus(quantity: Any) -> int:
    text = str(quantity)
    return int(float(text[:-1]) / 1000) if text.endswith("m") else int(float(text))


def node_type(values: Mapping, group: str, *, max_workers: int | None = None) -> dict:
    """One autoscaler node type sized like a pod of KubeRay worker group ``group``."""
    spec = values["worker_groups"][group]
    resources: dict[str, float] = {"CPU": _cpus(spec["cpu"])}
    if spec.get("gpus"):
        resources["GPU"] = int(spec["gpus"])
    if group == GPU_SPOT:
        resources[SPOT_RESOURCE] = 1
    hi = spec["max_replicas"] if max_workers is None else min(max_workers, spec["max_replicas"])
    return {
        "resources": resources,
        "node_config": {},
        "min_workers": min(spec["min_replicas"], hi),
        "max_workers": hi,
    }


def fake_autoscaling_config(
    values: Mapping,
    groups: Mapping[str, int | None],
    *,
    head_resources: Mapping[str, float],
    gcs_address: str,
    idle_timeout_s: float,
) -> dict:
    """A fake multi-node autoscaler config (``ray start --autoscaling-config``) for
    ``groups`` (group -> max workers cap, None: the values' max), with the Ray
    autoscaler's idle timeout (``autoscaler.idle_timeout_seconds`` in the manifests)."""
    types: dict[str, dict] = {
        group: node_type(values, group, max_workers=cap) for group, cap in groups.items()
    }
    types["ray.head.default"] = {
        "resources": dict(head_resources),
        "node_config": {},
        "max_workers": 0,
    }
    return {
        "cluster_name": "aipp-local",
        "max_workers": sum(t.get("max_workers", 0) for t in types.values()),
        "provider": {
            # Ray's fake multi-node provider, named as an external module: its built-in
            # type needs a defaults file the Ray wheel does not ship (fake_multi_node/
            # example.yaml); this config is complete, so no defaults are needed.
            "type": "external",
            "module": "ray.autoscaler._private.fake_multi_node.node_provider.FakeMultiNodeProvider",
            "launch_multiple": True,
            "head_node_id": FAKE_HEAD_NODE_ID,
            "use_node_id_as_ip": True,
            "disable_node_updaters": True,
            "disable_launch_config_check": True,
            "gcs_address": gcs_address,
        },
        "available_node_types": types,
        "head_node_type": "ray.head.default",
        "auth": {},
        "upscaling_speed": 1.0,
        "idle_timeout_minutes": idle_timeout_s / 60,
        "docker": {},
        "initialization_commands": [],
        "setup_commands": [],
        "head_setup_commands": [],
        "worker_setup_commands": [],
        "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
        "file_mounts": {},
        "cluster_synced_files": [],
        "file_mounts_sync_continuously": False,
        "rsync_exclude": [],
        "rsync_filter": [],
    }


__all__ = ["FAKE_HEAD_NODE_ID", "SPOT_RESOURCE", "fake_autoscaling_config", "node_type"]
