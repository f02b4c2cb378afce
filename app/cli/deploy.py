"""Start Ray and deploy ``serve_config.yaml`` the way ``serve deploy`` does, with our settings.

The config goes through the dashboard's REST API (the same path as
``serve deploy`` and KubeRay's RayService), so a later ``aipp serve --update``
applies in place: new ``user_config`` or autoscaling bounds without restarts.
"""

from __future__ import annotations

import copy
import os
import time
from pathlib import Path

import yaml

from app.core.ray_auth import ensure_ray_token
from app.core.settings import Settings

APP_NAME = "aipp"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"


class DeployError(RuntimeError):
    pass


def load_config(path: Path = DEFAULT_CONFIG, gpu: bool = False) -> dict:
    if gpu:
        from cluster.render import load_serve_config

        return load_serve_config(gpu=True, root=path.parent)
    return yaml.safe_load(path.read_text())


def forwarded_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Every AIPP_* variable of this process, so replicas see the same settings."""
    env = {k: v for k, v in os.environ.items() if k.startswith("AIPP_")}
    env.update(extra or {})
    return env


def prepare_config(
    config: dict, settings: Settings, env: dict[str, str], overrides: dict | None = None
) -> dict:
    """Bind host/port, forward settings as env vars, and apply per-deployment overrides."""
    cfg = copy.deepcopy(config)
    cfg.setdefault("http_options", {})
    cfg["http_options"]["host"] = settings.host
    cfg["http_options"]["port"] = settings.port
    for app in cfg["applications"]:
        runtime_env = app.setdefault("runtime_env", {}) or {}
        runtime_env.setdefault("env_vars", {}).update(env)
        app["runtime_env"] = runtime_env
        for dep in app.get("deployments", []):
            for key, value in (overrides or {}).get(dep["name"], {}).items():
                if isinstance(value, dict) and isinstance(dep.get(key), dict):
                    dep[key] = {**dep[key], **value}
                else:
                    dep[key] = value
    return cfg


def replica_resources(dep: dict) -> dict[str, float]:
    """What one replica of a deployment reserves (Serve's default is one CPU)."""
    opts = dep.get("ray_actor_options") or {}
    need = {"CPU": float(opts.get("num_cpus", 1) or 0), "GPU": float(opts.get("num_gpus", 0) or 0)}
    if opts.get("memory"):
        need["memory"] = float(opts["memory"])
    for name, amount in (opts.get("resources") or {}).items():
        need[name] = float(amount)
    return {k: v for k, v in need.items() if v}


def min_replicas(dep: dict) -> int:
    auto = dep.get("autoscaling_config")
    if auto:
        return int(auto.get("initial_replicas") or auto.get("min_replicas") or 1)
    replicas = dep.get("num_replicas", 1)
    return 1 if replicas in (None, "auto") else int(replicas)


def max_replicas(dep: dict) -> int:
    auto = dep.get("autoscaling_config")
    if auto:
        return int(auto.get("max_replicas") or min_replicas(dep))
    return min_replicas(dep)


def fit_problem(config: dict, total: dict[str, float], peak: bool = False) -> str | None:
    """Why the config's replicas can never all be scheduled on ``total``, or None.

    Checked before deploying so that a config too big for the machine fails in
    seconds with the deployment and resource named, not after a 600 s wait. With
    ``peak`` it checks every deployment at max_replicas: on a machine that cannot
    grow, an early upscale must not take the CPU a deployment's first replica needs.
    """
    needed: dict[str, float] = {}
    lines = []
    for app in config.get("applications", []):
        for dep in app.get("deployments", []):
            count = max_replicas(dep) if peak else min_replicas(dep)
            each = replica_resources(dep)
            for name, amount in each.items():
                needed[name] = needed.get(name, 0.0) + count * amount
            shown = ", ".join(f"{k}={v:g}" for k, v in each.items()) or "nothing"
            lines.append(f"  {dep['name']}: {count} × {{{shown}}}")
    short = [
        f"{name} {amount:g} needed, {total.get(name, 0.0):g} in the cluster"
        for name, amount in sorted(needed.items())
        if amount > total.get(name, 0.0) + 1e-9
    ]
    if not short:
        return None
    return (
        "the Serve config does not fit this Ray cluster ("
        + "; ".join(short)
        + ("). Replicas at peak (max_replicas):\n" if peak else "). Minimum replicas:\n")
        + "\n".join(lines)
        + "\nLower ray_actor_options in the config, or give Ray more with --num-cpus."
    )


def cluster_total() -> dict[str, float]:
    import ray

    return {k: float(v) for k, v in ray.cluster_resources().items()}


def dashboard_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.dashboard_port}"


def start_ray(settings: Settings, address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    ensure_ray_token()
    if address:
        ray.init(address=address, namespace="serve", log_to_driver=False)
        return
    ray.init(
        namespace="serve",
        num_cpus=num_cpus,
        # A local service is a loopback service: Ray's own ports stay off the network.
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port,
        log_to_driver=False,
    )


def _client(settings: Settings):
    # Ray 2.60 runs local clusters with token auth; REST clients read the token only
    # when told the mode, and only if it exists (a fresh machine has none yet).
    ensure_ray_token()
    from ray.dashboard.modules.serve.sdk import ServeSubmissionClient

    return ServeSubmissionClient(dashboard_url(settings))


def deploy(config: dict, settings: Settings) -> None:
    _client(settings).deploy_applications(config)


def serve_details(settings: Settings) -> dict:
    return _client(settings).get_serve_details()


def deployed_env(settings: Settings) -> dict[str, str]:
    """The env vars the running application was deployed with (empty if none is running)."""
    app = (serve_details(settings).get("applications") or {}).get(APP_NAME) or {}
    config = app.get("deployed_app_config") or {}
    return dict((config.get("runtime_env") or {}).get("env_vars") or {})


def _deployment_states(app: dict) -> dict[str, str]:
    """Each deployment's status and running replicas, for progress while models load."""
    states = {}
    for name, dep in (app.get("deployments") or {}).items():
        replicas = dep.get("replicas") or []
        running = sum(1 for r in replicas if r.get("state") == "RUNNING")
        states[name] = f"{dep.get('status', '?').lower()} {running}/{len(replicas)}"
    return states


def wait_running(settings: Settings, timeout_s: float = 600, on_tick=None) -> dict:
    """Block until the app is RUNNING; raise with Serve's own message if it fails."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        try:
            details = serve_details(settings)
        except Exception as exc:  # dashboard still starting
            last = str(exc)
            time.sleep(1)
            continue
        app = (details.get("applications") or {}).get(APP_NAME)
        if app:
            status = app.get("status")
            if on_tick:
                on_tick(status, _deployment_states(app))
            if status == "RUNNING":
                return app
            if status in ("DEPLOY_FAILED", "UNHEALTHY"):
                messages = [app.get("message") or ""]
                for name, dep in (app.get("deployments") or {}).items():
                    if dep.get("message"):
                        messages.append(f"{name}: {dep['message']}")
                raise DeployError("\n".join(m for m in messages if m))
            last = status
        time.sleep(1)
    raise DeployError(f"the application did not become RUNNING in {timeout_s:.0f}s ({last})")
