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


def dashboard_url(settings: Settings) -> str:
    return f"http://127.0.0.1:{settings.dashboard_port}"


def start_ray(settings: Settings, address: str | None, num_cpus: int | None) -> None:
    import ray

    if ray.is_initialized():
        return
    if address:
        ray.init(address=address, namespace="serve", log_to_driver=False)
        return
    ray.init(
        namespace="serve",
        num_cpus=num_cpus,
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port,
        log_to_driver=False,
    )


def _client(settings: Settings):
    # Ray 2.60 starts local clusters with token auth; REST clients find the token in
    # ~/.ray/auth_token only when told the mode (as `ray job submit` users must too).
    os.environ.setdefault("RAY_AUTH_MODE", "token")
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
                on_tick(status)
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
