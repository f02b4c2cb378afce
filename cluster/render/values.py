"""Values: cluster/values.yaml merged with a values file (or planner advice), checked."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cluster.render.common import (
    _DNS1035_LABEL,
    _DNS1123_SUBDOMAIN,
    _QUANTITY_RE,
    CPU_GROUP,
    DEFAULT_VALUES_PATH,
    GPU_ONDEMAND,
    GPU_SPOT,
    PHASES,
    UPGRADE_TYPES,
    RenderError,
    _read_yaml,
)

_QUANTITY = {
    "anyOf": [
        {"type": "integer", "minimum": 0},
        {"type": "string", "pattern": _QUANTITY_RE},
    ]
}
_SECRET_REF = {
    "type": "object",
    "additionalProperties": False,
    "required": ["name", "key"],
    "properties": {
        "name": {"type": "string", "pattern": _DNS1123_SUBDOMAIN, "maxLength": 253},
        "key": {"type": "string", "pattern": r"^[-._a-zA-Z0-9]+$", "maxLength": 253},
    },
}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_TOLERATION = {
    "type": "object",
    "additionalProperties": False,
    "required": ["key", "operator"],
    "properties": {
        "key": {"type": "string"},
        "operator": {"enum": ["Exists", "Equal"]},
        "value": {"type": "string"},
        "effect": {"enum": ["NoSchedule", "PreferNoSchedule", "NoExecute"]},
        "tolerationSeconds": {"type": "integer"},
    },
}
_INT0 = {"type": "integer", "minimum": 0}


def _group_schema(gpu: bool) -> dict:
    props = {"min_replicas": _INT0, "max_replicas": _INT0, "cpu": _QUANTITY, "memory": _QUANTITY}
    required = ["min_replicas", "max_replicas", "cpu", "memory"]
    if gpu:
        props |= {"gpus": {"type": "integer", "minimum": 1}, "priority": {"type": "integer"}}
        required += ["gpus"]
    return {
        "type": "object",
        "additionalProperties": False,
        "required": required,
        "properties": props,
    }


def _pod_size() -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": ["cpu", "memory"],
        "properties": {"cpu": _QUANTITY, "memory": _QUANTITY},
    }


def _obj(props: dict, required: list[str] | None = None) -> dict:
    return {
        "type": "object",
        "additionalProperties": False,
        "required": list(props) if required is None else required,
        "properties": props,
    }


VALUES_SCHEMA: dict = _obj(
    {
        "name": {"type": "string", "pattern": _DNS1035_LABEL, "maxLength": 40},
        "ray_version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "images": _obj(
            {
                "cpu": {"type": "string", "minLength": 1},
                "gpu": {"type": "string", "minLength": 1},
                "pull_policy": {"enum": ["Always", "IfNotPresent", "Never"]},
            }
        ),
        "service_account": {"type": ["string", "null"]},
        "secrets": _obj(
            {
                k: _SECRET_REF
                for k in ("database_url", "redis_url", "openai_api_key", "gcs_redis_password")
            }
        ),
        "state": _obj(
            {
                "phase1_database": {"enum": ["sqlite", "postgres"]},
                "data_volume_claim": {"type": "string", "pattern": _DNS1123_SUBDOMAIN},
                "storage_url": {"type": "string", "minLength": 1},
            }
        ),
        "ray_auth": _obj({"secret_name": {"type": "string", "pattern": _DNS1123_SUBDOMAIN}}),
        "gpu_llm": _obj({"model_dir": {"type": "string", "pattern": r"^/"}}),
        "gpu_driver": _obj(
            {
                "min_major": {"type": "integer", "minimum": 1},
                "karpenter_label": {"type": "string", "minLength": 1},
                "gfd_label": {"type": "string", "minLength": 1},
            }
        ),
        "compile_cache": _obj(
            {
                "claim_name": {
                    "anyOf": [
                        {"type": "null"},
                        {"type": "string", "pattern": _DNS1123_SUBDOMAIN, "maxLength": 253},
                    ]
                },
                "mount_path": {"type": "string", "pattern": r"^/"},
            }
        ),
        "llm_engine": {"enum": ["llama_cpp", "openai"]},
        "openai_base_url": {"type": "string", "minLength": 1},
        "gpu_type": {"type": "string", "minLength": 1},
        "gpu_provisioner": {"enum": ["karpenter", "gfd"]},
        "karpenter_gpus": {
            "type": "object",
            "additionalProperties": _obj(
                {
                    "name": {"type": "string", "minLength": 1},
                    "memory_mib": {"type": "integer", "minimum": 1},
                },
                required=["name"],
            ),
        },
        "gpu_types": {"type": "object", "additionalProperties": {"type": "string"}},
        "gpu_node_label": {"type": "string", "minLength": 1},
        "gpu_tolerations": {"type": "array", "items": _TOLERATION},
        "capacity_types": _obj(
            {
                cap: _obj(
                    {
                        "node_selector": _STR_MAP,
                        "tolerations": {"type": "array", "items": _TOLERATION},
                    }
                )
                for cap in ("on-demand", "spot")
            }
        ),
        "head": _obj({f"phase{p}": _pod_size() for p in PHASES}),
        "worker_groups": _obj(
            {
                CPU_GROUP: _group_schema(gpu=False),
                GPU_ONDEMAND: _group_schema(gpu=True),
                GPU_SPOT: _group_schema(gpu=True),
            }
        ),
        "autoscaler": _obj(
            {
                "idle_timeout_seconds": _INT0,
                "upscaling_mode": {"enum": ["Default", "Aggressive", "Conservative"]},
                "cpu": _QUANTITY,
                "memory": _QUANTITY,
            }
        ),
        "drain": _obj(
            {
                "worker_grace_period_seconds": {"type": "integer", "minimum": 1},
                "head_grace_period_seconds": {"type": "integer", "minimum": 1},
            }
        ),
        "deployments": {
            "type": "object",
            "additionalProperties": _obj(
                {
                    "min_replicas": _INT0,
                    "max_replicas": _INT0,
                    "target_ongoing_requests": {"type": "number", "exclusiveMinimum": 0},
                    "max_ongoing_requests": {"type": "integer", "minimum": 1},
                },
                required=[],
            ),
        },
        "serve_overrides": _obj(
            {f"phase{p}": {"type": ["object", "null"]} for p in PHASES}, required=[]
        ),
        "gcs_fault_tolerance": _obj({"redis_address": {"type": "string", "minLength": 1}}),
        "upgrade": _obj(
            {
                "strategy": {"enum": list(UPGRADE_TYPES)},
                "incremental": _obj(
                    {
                        "gateway_class_name": {"type": "string", "minLength": 1},
                        "step_size_percent": {"type": "integer", "minimum": 1, "maximum": 100},
                        "interval_seconds": {"type": "integer", "minimum": 1},
                        "max_surge_percent": {"type": "integer", "minimum": 1, "maximum": 100},
                    }
                ),
                "cluster_deletion_delay_seconds": _INT0,
            }
        ),
        "batch": _obj(
            {
                "input": {"type": "string", "minLength": 1},
                "output": {"type": "string", "minLength": 1},
                "active_deadline_seconds": {"type": "integer", "minimum": 1},
                "ttl_seconds_after_finished": _INT0,
                "gpu_max_replicas": _INT0,
                "gpus": {"type": "integer", "minimum": 1},
            }
        ),
    }
)


def merge_values(base: Any, override: Any) -> Any:
    """Values merge: mappings key by key (recursively), anything else replaces."""
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for key, value in override.items():
            out[key] = merge_values(base[key], value) if key in base else copy.deepcopy(value)
        return out
    return copy.deepcopy(override)


def _json_path(path: Any) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def check_values(values: Any) -> list[str]:
    """Problems with merged values, as ``path: message`` lines (empty when fine)."""
    import jsonschema

    validator = jsonschema.Draft7Validator(VALUES_SCHEMA)
    problems = []
    for err in sorted(validator.iter_errors(values), key=lambda e: list(map(str, e.path))):
        message = err.message
        if err.validator == "additionalProperties":
            message = message.replace("Additional properties are not allowed", "unknown key")
        problems.append(f"{_json_path(err.absolute_path)}: {message}")
    if problems:
        return problems
    for name, group in values["worker_groups"].items():
        if group["min_replicas"] > group["max_replicas"]:
            problems.append(
                f"worker_groups.{name}: min_replicas {group['min_replicas']} > "
                f"max_replicas {group['max_replicas']}"
            )
    for name, dep in values["deployments"].items():
        lo, hi = dep.get("min_replicas"), dep.get("max_replicas")
        if lo is not None and hi is not None and lo > hi:
            problems.append(f"deployments.{name}: min_replicas {lo} > max_replicas {hi}")
    if values["gpu_type"] not in values["gpu_types"]:
        known = ", ".join(sorted(values["gpu_types"]))
        problems.append(f"gpu_type: {values['gpu_type']!r} is not in gpu_types ({known})")
    elif values["gpu_provisioner"] == "karpenter" and (
        values["gpu_type"] not in values["karpenter_gpus"]
    ):
        known = ", ".join(sorted(values["karpenter_gpus"]))
        problems.append(
            f"gpu_type: {values['gpu_type']!r} is not in karpenter_gpus ({known}); "
            "Karpenter needs its instance GPU name"
        )
    for key in ("cpu", "gpu"):
        reason = _image_problem(values["images"][key])
        if reason:
            problems.append(f"images.{key}: {reason}")
    inc = values["upgrade"]["incremental"]
    if inc["step_size_percent"] > inc["max_surge_percent"]:
        problems.append("upgrade.incremental: step_size_percent must be <= max_surge_percent")
    return problems


def _image_problem(image: str) -> str | None:
    if "@sha256:" in image:
        return None
    last = image.rsplit("/", 1)[-1]
    if ":" not in last:
        return f"{image!r} has no tag; pin a version (never :latest)"
    if last.rsplit(":", 1)[1] == "latest":
        return f"{image!r} uses :latest; pin a version"
    return None


def default_values() -> dict:
    data = _read_yaml(DEFAULT_VALUES_PATH, "default values")
    if not isinstance(data, dict):
        raise RenderError(f"{DEFAULT_VALUES_PATH} must hold a mapping")
    return data


def resolve_values(overrides: Mapping | None = None) -> dict:
    """Default values merged with ``overrides``, then checked."""
    values = default_values()
    if overrides:
        if not isinstance(overrides, Mapping):
            raise RenderError("values must be a mapping")
        values = merge_values(values, overrides)
    problems = check_values(values)
    if problems:
        raise RenderError("invalid values:\n  " + "\n  ".join(problems))
    return values


def read_values_file(path: Path | str) -> dict:
    """The overrides in a values file (or the planner's serve-overrides file)."""
    overrides = _read_yaml(Path(path), "values file")
    if overrides is None:
        return {}
    if not isinstance(overrides, Mapping):
        raise RenderError(
            f"values file {path} must hold a mapping (got {type(overrides).__name__})"
        )
    try:
        resolve_values(overrides)
    except RenderError as exc:
        raise RenderError(f"values file {path}: {exc}") from None
    return dict(overrides)


def load_values(path: Path | str | None = None) -> dict:
    """cluster/values.yaml merged with the file at ``path`` (a values file or planner advice)."""
    return resolve_values(read_values_file(path) if path is not None else None)
