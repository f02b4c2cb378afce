"""Pod-level building blocks shared by every kind: labels, containers, groups."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from app.core.ray_env import CLUSTER_ENV
from cluster.render.common import (
    APP_NAME,
    CPU_GROUP,
    DATA_DIR_IN_POD,
    GPU_SPOT,
    MARKET_LABEL,
)
from cluster.render.drain import add_drain, head_pre_stop, worker_pre_stop

# Ray token authentication (Ray >= 2.52, KubeRay >= 1.5.1): the operator sets
# RAY_AUTH_MODE/RAY_AUTH_TOKEN on every Ray container from `authOptions.secretName`.
# A named Secret (not one generated per RayCluster) keeps the token stable across
# RayService upgrades, which create a new RayCluster each time.
RAY_AUTH_MODE = "token"
RAY_AUTH_TOKEN_KEY = "auth_token"  # the data key KubeRay reads from that Secret
# Hugging Face libraries must never reach for the hub in a pod: the GPU model is baked
# into the GPU image (cluster/Dockerfile), so a missing file fails fast instead of
# downloading on every start or spot replacement.
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}


def _labels(values: Mapping, phase: int, component: str) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": APP_NAME,
        "app.kubernetes.io/instance": values["name"],
        "app.kubernetes.io/component": component,
        "aipp/phase": str(phase),
    }


def _quantity(value: Any) -> str:
    return str(value)


def _resources(cpu: Any, memory: Any, gpus: int = 0) -> dict:
    amounts = {"cpu": _quantity(cpu), "memory": _quantity(memory)}
    if gpus:
        amounts["nvidia.com/gpu"] = str(gpus)
    return {"requests": dict(amounts), "limits": dict(amounts)}


def _secret_env(name: str, ref: Mapping) -> dict:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": ref["name"], "key": ref["key"]}}}


def _state_env(phase: int, values: Mapping, *, head: bool) -> list[dict]:
    """AIPP_* settings from Secrets and values; secrets never enter the Serve config."""
    secrets, state = values["secrets"], values["state"]
    env = []
    if phase >= 2 or state["phase1_database"] == "postgres":
        env.append(_secret_env("AIPP_DATABASE_URL", secrets["database_url"]))
    env.append(_secret_env("AIPP_REDIS_URL", secrets["redis_url"]))
    if phase == 1:
        if head:
            env.append({"name": "AIPP_DATA_DIR", "value": DATA_DIR_IN_POD})
        if values["llm_engine"] == "openai":
            env.append({"name": "AIPP_OPENAI_BASE_URL", "value": values["openai_base_url"]})
            env.append(_secret_env("AIPP_OPENAI_API_KEY", secrets["openai_api_key"]))
    else:
        env.append({"name": "AIPP_STORAGE_URL", "value": state["storage_url"]})
    # Ray's idle bookkeeping, as `aipp serve` sets it locally (minus what the autoscaler
    # reads): every Ray process in the pod reads it at `ray start`.
    env += [{"name": k, "value": v} for k, v in CLUSTER_ENV.items()]
    return env


def _container(
    name: str,
    image: str,
    values: Mapping,
    resources: dict,
    env: list[dict] | None = None,
    ports: list[dict] | None = None,
    volume_mounts: list[dict] | None = None,
) -> dict:
    c: dict[str, Any] = {
        "name": name,
        "image": image,
        "imagePullPolicy": values["images"]["pull_policy"],
    }
    if env:
        c["env"] = env
    if ports:
        c["ports"] = ports
    c["resources"] = resources
    if volume_mounts:
        c["volumeMounts"] = volume_mounts
    return c


def _pod_template(
    values: Mapping,
    labels: Mapping[str, str],
    containers: list[dict],
    *,
    node_selector: Mapping[str, str] | None = None,
    tolerations: list[Mapping] | None = None,
    volumes: list[dict] | None = None,
    restart_policy: str | None = None,
    affinity: Mapping | None = None,
    fs_group: int | None = None,
) -> dict:
    spec: dict[str, Any] = {}
    if values["service_account"]:
        spec["serviceAccountName"] = values["service_account"]
    if restart_policy:
        spec["restartPolicy"] = restart_policy
    if fs_group is not None:
        # Mounted volumes group-writable for the image's `ray` user (gid 100, `users`).
        spec["securityContext"] = {"fsGroup": fs_group}
    spec["containers"] = containers
    if node_selector:
        spec["nodeSelector"] = dict(node_selector)
    if tolerations:
        spec["tolerations"] = [dict(t) for t in tolerations]
    if affinity:
        spec["affinity"] = dict(affinity)
    if volumes:
        spec["volumes"] = volumes
    return {"metadata": {"labels": dict(labels)}, "spec": spec}


_HEAD_PORTS = [
    {"containerPort": 6379, "name": "gcs-server"},
    {"containerPort": 8265, "name": "dashboard"},
    {"containerPort": 10001, "name": "client"},
    {"containerPort": 8000, "name": "serve"},
]


def _head_group(phase: int, values: Mapping, *, zero_cpus: bool, image: str | None = None) -> dict:
    """The head pod; ``image`` defaults to the CPU image (the batch RayJob's head needs the
    GPU image: its driver builds the vLLM processor, which imports transformers)."""
    size = values["head"][f"phase{phase}"]
    volumes = mounts = None
    if phase == 1:
        volumes = [
            {
                "name": "aipp-data",
                "persistentVolumeClaim": {"claimName": values["state"]["data_volume_claim"]},
            }
        ]
        mounts = [{"name": "aipp-data", "mountPath": DATA_DIR_IN_POD}]
    env = _state_env(phase, values, head=True)
    if image == values["images"]["gpu"]:
        env += offline_env()
    container = _container(
        "ray-head",
        image or values["images"]["cpu"],
        values,
        _resources(size["cpu"], size["memory"]),
        env=env,
        ports=[dict(p) for p in _HEAD_PORTS],
        volume_mounts=mounts,
    )
    capacity = values["capacity_types"]["on-demand"]
    group = {
        # num-cpus 0: no replica or task lands on the head; it keeps GCS, the dashboard,
        # the Serve controller and the autoscaler.
        "rayStartParams": {"num-cpus": "0"} if zero_cpus else {},
        "template": _pod_template(
            values,
            _labels(values, phase, "head"),
            [container],
            node_selector=capacity["node_selector"] if phase >= 2 else None,
            tolerations=capacity["tolerations"] if phase >= 2 else None,
            volumes=volumes,
        ),
    }
    # Phases 1 and 2: no GCS fault tolerance, the head's loss ends the cluster, so Serve
    # shuts down gracefully first (TaskRunner leases handed back, requests finished).
    grace = values["drain"]["head_grace_period_seconds"]
    return add_drain(group, grace, head_pre_stop(grace) if phase in (1, 2) else None)


def _cpu_group(phase: int, values: Mapping, *, image: str | None = None) -> dict:
    """The CPU worker group; ``image`` defaults to the CPU image (the batch RayJob gives
    it the GPU image: ray.data.llm's tokenizer stages land there and need transformers
    and the model's tokenizer files, which only the GPU image has)."""
    spec = values["worker_groups"][CPU_GROUP]
    capacity = values["capacity_types"]["on-demand"]
    env = _state_env(phase, values, head=False)
    if image == values["images"]["gpu"]:
        env += offline_env()
    container = _container(
        "ray-worker",
        image or values["images"]["cpu"],
        values,
        _resources(spec["cpu"], spec["memory"]),
        env=env,
    )
    grace = values["drain"]["worker_grace_period_seconds"]
    group = {
        "groupName": CPU_GROUP,
        "replicas": spec["min_replicas"],
        "minReplicas": spec["min_replicas"],
        "maxReplicas": spec["max_replicas"],
        "labels": {MARKET_LABEL: "on-demand"},
        "rayStartParams": {},
        "template": _pod_template(
            values,
            _labels(values, phase, CPU_GROUP),
            [container],
            node_selector=capacity["node_selector"],
            tolerations=capacity["tolerations"],
        ),
    }
    return add_drain(group, grace, worker_pre_stop(grace))


def _gpu_group(
    phase: int,
    values: Mapping,
    group: str,
    *,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
) -> dict:
    spec = values["worker_groups"][group]
    market = "spot" if group == GPU_SPOT else "on-demand"
    capacity = values["capacity_types"][market]
    node_selector = {**capacity["node_selector"], **gpu_node_selector(values)}
    tolerations = [*values["gpu_tolerations"], *capacity["tolerations"]]
    volumes, mounts, cache_env = compile_cache(values)
    container = _container(
        "ray-worker",
        values["images"]["gpu"],
        values,
        _resources(spec["cpu"], spec["memory"], spec["gpus"]),
        env=_state_env(phase, values, head=False) + offline_env() + cache_env,
        volume_mounts=mounts,
    )
    lo = spec["min_replicas"] if min_replicas is None else min_replicas
    hi = spec["max_replicas"] if max_replicas is None else max_replicas
    out: dict[str, Any] = {
        "groupName": group,
        "replicas": lo,
        "minReplicas": lo,
        "maxReplicas": hi,
    }
    if spec.get("priority"):
        # Autoscaler v2 (Ray >= 2.56) prefers the higher priority group for scale-up.
        out["priority"] = spec["priority"]
    out["labels"] = {MARKET_LABEL: market}
    out["rayStartParams"] = {}
    out["template"] = _pod_template(
        values,
        _labels(values, phase, group),
        [container],
        node_selector=node_selector,
        tolerations=tolerations,
        affinity=gpu_driver_affinity(values),
        volumes=volumes,
        fs_group=RAY_GID if volumes else None,
    )
    grace = values["drain"]["worker_grace_period_seconds"]
    return add_drain(out, grace, worker_pre_stop(grace))


def _autoscaler_options(values: Mapping) -> dict:
    a = values["autoscaler"]
    return {
        "version": "v2",
        "upscalingMode": a["upscaling_mode"],
        "idleTimeoutSeconds": a["idle_timeout_seconds"],
        "imagePullPolicy": values["images"]["pull_policy"],
        "resources": _resources(a["cpu"], a["memory"]),
    }


def auth_options(values: Mapping) -> dict:
    """``authOptions`` for every RayCluster spec: dashboard, jobs, client and GCS need the token."""
    return {"mode": RAY_AUTH_MODE, "secretName": values["ray_auth"]["secret_name"]}


def ray_auth_env(values: Mapping) -> list[dict]:
    """Token env for a container KubeRay does not manage (the RayJob submitter)."""
    return [
        {"name": "RAY_AUTH_MODE", "value": RAY_AUTH_MODE},
        _secret_env(
            "RAY_AUTH_TOKEN",
            {"name": values["ray_auth"]["secret_name"], "key": RAY_AUTH_TOKEN_KEY},
        ),
    ]


def offline_env() -> list[dict]:
    return [{"name": k, "value": v} for k, v in OFFLINE_ENV.items()]


# Karpenter's well-known labels (AWS provider) for the GPU of an instance type: known
# before a node exists, so a pending pod that requires them makes Karpenter launch one.
KARPENTER_GPU_NAME = "karpenter.k8s.aws/instance-gpu-name"
KARPENTER_GPU_MEMORY = "karpenter.k8s.aws/instance-gpu-memory"


def gpu_node_selector(values: Mapping) -> dict[str, str]:
    """The GPU model, as a label the node provisioner knows (see ``gpu_provisioner``)."""
    if values["gpu_provisioner"] == "karpenter":
        gpu = values["karpenter_gpus"][values["gpu_type"]]
        out = {KARPENTER_GPU_NAME: gpu["name"]}
        if gpu.get("memory_mib"):
            out[KARPENTER_GPU_MEMORY] = str(gpu["memory_mib"])
        return out
    return {values["gpu_node_label"]: values["gpu_types"][values["gpu_type"]]}


def _at_least(key: str, floor: int) -> dict:
    return {"key": key, "operator": "Gt", "values": [str(int(floor) - 1)]}


def gpu_driver_affinity(values: Mapping) -> dict:
    """Require a node whose NVIDIA driver is new enough for the pinned vLLM/torch (CUDA 13).

    With Karpenter the floor is a label of the GPU NodePool (the driver of its AMI), which
    Karpenter can provision for; GPU feature discovery's labels, which appear only once a
    node runs, are a preference. Without Karpenter they are the requirement.
    """
    driver = values["gpu_driver"]
    floor = int(driver["min_major"])
    gfd = [
        {
            "key": values["gpu_node_label"],
            "operator": "In",
            "values": [values["gpu_types"][values["gpu_type"]]],
        },
        _at_least(driver["gfd_label"], floor),
    ]
    if values["gpu_provisioner"] != "karpenter":
        required = [_at_least(driver["gfd_label"], floor)]
        return {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [{"matchExpressions": required}]
                }
            }
        }
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [
                    {"matchExpressions": [_at_least(driver["karpenter_label"], floor)]}
                ]
            },
            "preferredDuringSchedulingIgnoredDuringExecution": [
                {"weight": 100, "preference": {"matchExpressions": gfd}}
            ],
        }
    }


RAY_GID = 100  # the rayproject images' `ray` user is in group `users` (gid 100)
COMPILE_CACHE_VOLUME = "compile-cache"
# Where each library keeps what it compiles, relative to the cache mount.
COMPILE_CACHE_DIRS = {
    "VLLM_CACHE_ROOT": "vllm",  # torch.compile artifacts (torch_compile_cache/)
    "TORCHINDUCTOR_CACHE_DIR": "inductor",
    "TRITON_CACHE_DIR": "triton",
    "FLASHINFER_WORKSPACE_BASE": "flashinfer",
    "CUDA_CACHE_PATH": "cuda",  # the driver's PTX JIT cache
}


def compile_cache(values: Mapping) -> tuple[list[dict] | None, list[dict] | None, list[dict]]:
    """(volumes, volumeMounts, env) that put every compile cache on the shared claim.

    Without it each replica start (and each spot replacement) compiles vLLM's graphs and
    kernels again; with it only the first start on a new configuration does.
    """
    cache = values["compile_cache"]
    if not cache["claim_name"]:
        return None, None, []
    root = cache["mount_path"].rstrip("/")
    volumes = [
        {
            "name": COMPILE_CACHE_VOLUME,
            "persistentVolumeClaim": {"claimName": cache["claim_name"]},
        }
    ]
    mounts = [{"name": COMPILE_CACHE_VOLUME, "mountPath": root}]
    env = [{"name": k, "value": f"{root}/{sub}"} for k, sub in COMPILE_CACHE_DIRS.items()]
    return volumes, mounts, env


def _metadata(values: Mapping, phase: int, name: str, component: str) -> dict:
    return {"name": name, "labels": _labels(values, phase, component)}
