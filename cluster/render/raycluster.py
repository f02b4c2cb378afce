"""RayCluster manifests: phase 1 (head only) and phase 2 (head + one GPU group)."""

from __future__ import annotations

from collections.abc import Mapping

from cluster.render.common import API_VERSION, GPU_ONDEMAND
from cluster.render.pods import (
    _autoscaler_options,
    _gpu_group,
    _head_group,
    _metadata,
    auth_options,
)


def raycluster_phase1(values: Mapping) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(values, 1, values["name"], "raycluster"),
        "spec": {
            "rayVersion": values["ray_version"],
            "authOptions": auth_options(values),
            "headGroupSpec": _head_group(1, values, zero_cpus=False),
        },
    }


def raycluster_phase2(values: Mapping) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "RayCluster",
        "metadata": _metadata(values, 2, values["name"], "raycluster"),
        "spec": {
            "rayVersion": values["ray_version"],
            "authOptions": auth_options(values),
            "enableInTreeAutoscaling": True,
            "autoscalerOptions": _autoscaler_options(values),
            "headGroupSpec": _head_group(2, values, zero_cpus=False),
            "workerGroupSpecs": [_gpu_group(2, values, GPU_ONDEMAND)],
        },
    }
