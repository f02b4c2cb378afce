"""Phase 3 RayService: the Serve config inline, autoscaling, GCS FT, upgrade strategy."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cluster.render.common import (
    API_VERSION,
    GPU_ONDEMAND,
    GPU_SPOT,
    SERVE_CONFIG_GPU_NAME,
    SERVE_CONFIG_NAME,
    dump_yaml,
)
from cluster.render.pods import (
    _autoscaler_options,
    _cpu_group,
    _gpu_group,
    _head_group,
    _metadata,
    auth_options,
)


def _upgrade_strategy(values: Mapping) -> dict:
    up = values["upgrade"]
    out: dict[str, Any] = {"type": up["strategy"]}
    if up["strategy"] == "NewClusterWithIncrementalUpgrade":
        inc = up["incremental"]
        out["clusterUpgradeOptions"] = {
            "gatewayClassName": inc["gateway_class_name"],
            "stepSizePercent": inc["step_size_percent"],
            "intervalSeconds": inc["interval_seconds"],
            "maxSurgePercent": inc["max_surge_percent"],
        }
    return out


def _serve_config_text(cfg: Mapping, sources: str) -> str:
    return f"# {sources}\n" + dump_yaml(cfg)


def _sources(phase: int, values_name: str | None) -> str:
    parts = [SERVE_CONFIG_NAME]
    if phase >= 2:
        parts.append(SERVE_CONFIG_GPU_NAME)
    parts.append("cluster/values.yaml")
    if values_name:
        parts.append(values_name)
    return "from " + " + ".join(parts)


def rayservice_phase3(values: Mapping, serve_cfg: Mapping) -> dict:
    return {
        "apiVersion": API_VERSION,
        "kind": "RayService",
        "metadata": _metadata(values, 3, values["name"], "rayservice"),
        "spec": {
            "upgradeStrategy": _upgrade_strategy(values),
            "rayClusterDeletionDelaySeconds": values["upgrade"]["cluster_deletion_delay_seconds"],
            # The head takes no replicas; keep it out of the data path as well.
            "excludeHeadPodFromServeSvc": True,
            # The values file is not named in here: renaming it must not change the
            # string KubeRay compares to decide on an update.
            "serveConfigV2": _serve_config_text(serve_cfg, "Serve config " + _sources(3, None)),
            "rayClusterConfig": {
                "rayVersion": values["ray_version"],
                "authOptions": auth_options(values),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": _autoscaler_options(values),
                "gcsFaultToleranceOptions": {
                    "redisAddress": values["gcs_fault_tolerance"]["redis_address"],
                    "redisPassword": {
                        "valueFrom": {
                            "secretKeyRef": {
                                "name": values["secrets"]["gcs_redis_password"]["name"],
                                "key": values["secrets"]["gcs_redis_password"]["key"],
                            }
                        }
                    },
                },
                "headGroupSpec": _head_group(3, values, zero_cpus=True),
                "workerGroupSpecs": [
                    _cpu_group(3, values),
                    _gpu_group(3, values, GPU_ONDEMAND),
                    _gpu_group(3, values, GPU_SPOT),
                ],
            },
        },
    }
