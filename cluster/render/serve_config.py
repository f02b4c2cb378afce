"""Serve config: one source (serve_config.yaml), merged overrides, Serve's own schema."""

from __future__ import annotations

import copy
import ipaddress
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cluster.render.common import (
    APP_NAME,
    GPU_ONDEMAND,
    GPU_SPOT,
    PHASES,
    REPO_ROOT,
    SERVE_CONFIG_GPU_NAME,
    SERVE_CONFIG_NAME,
    RenderError,
    _read_yaml,
)


def _is_named_list(value: Any) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in value)
    )


def merge_serve_config(base: Any, override: Any, _path: str = "") -> Any:
    """Merge ``override`` over ``base`` and return a new object (inputs untouched).

    - mappings merge key by key, recursively;
    - lists of mappings that all carry a ``name`` (applications, deployments) merge
      item by item, matched by name; an override item with a name the base lacks is
      an error, so a typo cannot add a deployment;
    - anything else (scalars, other lists, null) replaces the base value.
    """
    if isinstance(base, Mapping) and isinstance(override, Mapping):
        out = {k: copy.deepcopy(v) for k, v in base.items()}
        for key, value in override.items():
            sub = f"{_path}.{key}" if _path else str(key)
            out[key] = (
                merge_serve_config(base[key], value, sub) if key in base else (copy.deepcopy(value))
            )
        return out
    if _is_named_list(base) and _is_named_list(override):
        out_list = copy.deepcopy(list(base))
        index = {item["name"]: i for i, item in enumerate(out_list)}
        for item in override:
            name = item["name"]
            if name not in index:
                known = ", ".join(sorted(index))
                raise RenderError(
                    f"{_path or 'list'}: override names {name!r}, which the base config "
                    f"does not have (known: {known})"
                )
            out_list[index[name]] = merge_serve_config(
                out_list[index[name]], item, f"{_path}[{name}]"
            )
        return out_list
    return copy.deepcopy(override)


def load_serve_config(
    phase: int = 1, *, gpu: bool | None = None, root: Path | str | None = None
) -> dict:
    """The Serve config for a phase: serve_config.yaml, plus serve_config.gpu.yaml for GPUs.

    ``gpu`` defaults to ``phase >= 2``; ``aipp serve --gpu`` calls
    ``load_serve_config(gpu=True)``. ``root`` is the directory holding both files
    (the repository root by default). Cluster-only changes (bind address, placement,
    planner bounds) are not applied here; see :func:`build_serve_config`.
    """
    if phase not in PHASES:
        raise RenderError(f"phase must be one of 1, 2, 3 (got {phase!r})")
    root = Path(root) if root is not None else REPO_ROOT
    base = _read_yaml(root / SERVE_CONFIG_NAME, "serve config")
    if not isinstance(base, Mapping):
        raise RenderError(f"{root / SERVE_CONFIG_NAME} must hold a mapping")
    if gpu is None:
        gpu = phase >= 2
    if not gpu:
        return copy.deepcopy(dict(base))
    override = _read_yaml(root / SERVE_CONFIG_GPU_NAME, "GPU serve overrides")
    if not isinstance(override, Mapping):
        raise RenderError(f"{root / SERVE_CONFIG_GPU_NAME} must hold a mapping")
    return merge_serve_config(base, override)


def _app(cfg: Mapping) -> dict:
    apps = [a for a in cfg.get("applications") or [] if a.get("name") == APP_NAME]
    if len(apps) != 1:
        raise RenderError(f"the serve config must have exactly one application {APP_NAME!r}")
    return apps[0]


def serve_deployments(cfg: Mapping) -> dict[str, dict]:
    """``{name: deployment}`` of the aipp application."""
    return {d["name"]: d for d in _app(cfg).get("deployments") or []}


def _bounds_overlay(deployments: Mapping[str, Mapping]) -> dict:
    """Planner advice ``{Name: {min_replicas, max_replicas, ...}}`` as a serve override."""
    items = []
    for name, advice in deployments.items():
        item: dict[str, Any] = {"name": name}
        autoscaling = {
            k: advice[k]
            for k in ("min_replicas", "max_replicas", "target_ongoing_requests")
            if k in advice
        }
        if autoscaling:
            item["autoscaling_config"] = autoscaling
        if "max_ongoing_requests" in advice:
            item["max_ongoing_requests"] = advice["max_ongoing_requests"]
        items.append(item)
    return {"applications": [{"name": APP_NAME, "deployments": items}]} if items else {}


CLUSTER_BIND_HOST = "0.0.0.0"


def loopback_only(host: str) -> bool:
    """True when ``host`` is reachable from this machine only (the one case without keys)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def offline_model_env(values: Mapping) -> dict[str, str]:
    """GPU phases: vLLM loads the model baked into the GPU image; the hub is off."""
    from cluster.render.pods import OFFLINE_ENV

    return {"AIPP_LLM_MODEL": values["gpu_llm"]["model_dir"], **OFFLINE_ENV}


def _cluster_overlay(phase: int, values: Mapping) -> dict:
    """What every cluster phase changes: the bind address, API keys, models, engine.

    API keys follow from the address Serve really binds: anything beyond loopback
    gets ``AIPP_AUTH=on`` (``auto`` would read AIPP_HOST, which the pods do not set).
    """
    overlay: dict[str, Any] = {"http_options": {"host": CLUSTER_BIND_HOST}}
    env: dict[str, str] = {}
    if not loopback_only(CLUSTER_BIND_HOST):
        env["AIPP_AUTH"] = "on"
    if phase == 1:
        env["AIPP_LLM_ENGINE"] = values["llm_engine"]
    else:
        env.update(offline_model_env(values))
    if env:
        overlay["applications"] = [{"name": APP_NAME, "runtime_env": {"env_vars": env}}]
    return overlay


def require_auth_beyond_loopback(cfg: Mapping) -> list[str]:
    """A Serve config that binds beyond loopback must turn API keys on."""
    host = str((cfg.get("http_options") or {}).get("host") or "127.0.0.1")
    if loopback_only(host):
        return []
    env = (_app(cfg).get("runtime_env") or {}).get("env_vars") or {}
    if str(env.get("AIPP_AUTH", "")).lower() != "on":
        return [f"http_options.host {host!r} is not loopback, but AIPP_AUTH is not 'on'"]
    return []


def build_serve_config(phase: int, values: Mapping, *, root: Path | str | None = None) -> dict:
    """The Serve config a phase deploys, validated.

    serve_config.yaml <- serve_config.gpu.yaml (phases 2, 3) <- cluster overlay
    (bind 0.0.0.0; phase 1 engine) <- values.serve_overrides.phaseN <- values.deployments
    (planner replica bounds).
    """
    cfg = load_serve_config(phase, root=root)
    cfg = merge_serve_config(cfg, _cluster_overlay(phase, values))
    cfg = merge_serve_config(cfg, values["serve_overrides"].get(f"phase{phase}") or {})
    known = serve_deployments(cfg)
    unknown = sorted(set(values["deployments"]) - set(known))
    if unknown:
        raise RenderError(
            f"deployments: {', '.join(unknown)} not in {SERVE_CONFIG_NAME} "
            f"(known: {', '.join(sorted(known))})"
        )
    cfg = merge_serve_config(cfg, _bounds_overlay(values["deployments"]))
    problems = (
        check_serve_config(cfg)
        + check_gpu_fit(phase, cfg, values)
        + require_auth_beyond_loopback(cfg)
    )
    if problems:
        raise RenderError(f"phase {phase} Serve config: " + "; ".join(problems))
    return cfg


def _schema_fields(model: Any) -> set[str]:
    return set(model.model_fields)


def check_serve_config(cfg: Mapping) -> list[str]:
    """Validate with Ray Serve's ``ServeDeploySchema``, plus unknown-key checks.

    Serve's schema accepts unknown keys for forward compatibility, so a misspelt
    option would be ignored silently; here every key must be a field Serve knows.
    """
    from pydantic import ValidationError
    from ray.serve.config import AutoscalingConfig
    from ray.serve.schema import (
        DeploymentSchema,
        RayActorOptionsSchema,
        ServeApplicationSchema,
        ServeDeploySchema,
    )

    problems = []
    for key in set(cfg) - _schema_fields(ServeDeploySchema):
        problems.append(f"unknown top-level key {key!r}")
    for app in cfg.get("applications") or []:
        for key in set(app) - _schema_fields(ServeApplicationSchema):
            problems.append(f"application {app.get('name')!r}: unknown key {key!r}")
        for dep in app.get("deployments") or []:
            where = f"deployment {dep.get('name')!r}"
            for key in set(dep) - _schema_fields(DeploymentSchema):
                problems.append(f"{where}: unknown key {key!r}")
            rao = dep.get("ray_actor_options") or {}
            for key in set(rao) - _schema_fields(RayActorOptionsSchema):
                problems.append(f"{where}: unknown ray_actor_options key {key!r}")
            auto = dep.get("autoscaling_config") or {}
            lo, hi = auto.get("min_replicas"), auto.get("max_replicas")
            if isinstance(lo, int) and isinstance(hi, int) and lo > hi:
                problems.append(f"{where}: min_replicas {lo} > max_replicas {hi}")
            elif isinstance(auto, Mapping) and auto:
                # DeploymentSchema keeps autoscaling_config as a plain dict: check it here.
                try:
                    AutoscalingConfig.model_validate(dict(auto))
                except ValidationError as exc:
                    for err in exc.errors():
                        loc = ".".join(str(p) for p in err["loc"])
                        problems.append(f"{where}: autoscaling_config.{loc}: {err['msg']}")
    try:
        ServeDeploySchema.model_validate(copy.deepcopy(dict(cfg)))
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            problems.append(f"{loc}: {err['msg']}")
    return problems


def _cpu_quantity(value: Any) -> float:
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


def check_gpu_fit(phase: int, cfg: Mapping, values: Mapping) -> list[str]:
    """GPU fractions must fit: one replica of every GPU deployment shares one node."""
    deps = serve_deployments(cfg)
    opts = {n: d.get("ray_actor_options") or {} for n, d in deps.items()}
    gpu_deps = {n: float(o.get("num_gpus") or 0) for n, o in opts.items()}
    gpu_deps = {n: g for n, g in gpu_deps.items() if g > 0}
    if phase == 1:
        return [f"phase 1 has no GPU, but {n} asks for num_gpus {g}" for n, g in gpu_deps.items()]
    problems = []
    groups = [GPU_ONDEMAND] if phase == 2 else [GPU_ONDEMAND, GPU_SPOT]
    total_gpus = sum(gpu_deps.values())
    total_cpus = sum(float(opts[n].get("num_cpus", 1)) for n in gpu_deps)
    for group in groups:
        spec = values["worker_groups"][group]
        if total_gpus > spec["gpus"] + 1e-9:
            parts = " + ".join(f"{n} {g:g}" for n, g in gpu_deps.items())
            problems.append(
                f"num_gpus per replica ({parts} = {total_gpus:g}) does not fit the "
                f"{spec['gpus']} GPU(s) of a {group} node"
            )
        if total_cpus > _cpu_quantity(spec["cpu"]) + 1e-9:
            problems.append(
                f"num_cpus of the GPU deployments ({total_cpus:g}) does not fit the "
                f"{spec['cpu']} CPUs of a {group} node"
            )
    return problems


def gpu_fraction_per_node(serve_cfg: Mapping) -> float:
    """Sum of num_gpus over the deployments: one replica of each shares a node."""
    return sum(
        float((dep.get("ray_actor_options") or {}).get("num_gpus") or 0)
        for dep in serve_deployments(serve_cfg).values()
    )
