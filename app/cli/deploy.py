"""Start Ray and deploy ``serve_config.yaml`` the way ``serve deploy`` does, with our settings.

The config goes through the dashboard's REST API (the same path as
``serve deploy`` and KubeRay's RayService), so a later ``aipp serve --update``
applies in place: new ``user_config`` or autoscaling bounds without restarts.
"""

from __future__ import annotations

import copy
import ipaddress
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from app.core.ray_auth import ensure_ray_token
from app.core.settings import Settings

APP_NAME = "aipp"
REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = REPO_ROOT / "serve_config.yaml"


class DeployError(RuntimeError):
    pass


class Stopped(RuntimeError):
    """SIGTERM/SIGINT arrived while waiting for the app: stop waiting and drain."""


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
            _bound_shutdown(dep, settings.shutdown_grace_s)
    return cfg


# Ray 2.60's default graceful_shutdown_timeout_s (ray/serve/_private/constants.py).
SERVE_DEFAULT_SHUTDOWN_TIMEOUT_S = 20.0


def _bound_shutdown(dep: dict, grace_s: float) -> None:
    """No replica may drain for longer than ``aipp serve`` waits on a signal
    (AIPP_SHUTDOWN_GRACE_S): past it the process exits and the drain is cut short."""
    timeout = float(dep.get("graceful_shutdown_timeout_s", SERVE_DEFAULT_SHUTDOWN_TIMEOUT_S))
    if timeout > grace_s:
        dep["graceful_shutdown_timeout_s"] = grace_s


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


# Ray's switch for "no multi-node clusters" (its default on macOS and Windows).
SINGLE_NODE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


def _loopback_node() -> None:
    """Let a local Ray node really sit on 127.0.0.1.

    On Linux, Ray 2.60 swaps a node IP of 127.0.0.1 for the machine's address
    (``services.resolve_ip_for_localhost``) unless multi-node clusters are off, and
    then its GCS, raylet, object manager, worker and agent servers listen on every
    interface. With this variable at 0 the node IP stays 127.0.0.1 and those servers
    bind loopback; Ray's processes inherit it. An operator's explicit value wins.
    """
    os.environ.setdefault(SINGLE_NODE_ENV, "0")
    constants = sys.modules.get("ray._private.ray_constants")
    if constants is not None:  # imported already: Ray read the variable at import
        constants.ENABLE_RAY_CLUSTER = os.environ[SINGLE_NODE_ENV].lower() in ("1", "true")


def start_ray(settings: Settings, address: str | None, num_cpus: int | None) -> None:
    if not address and not os.environ.get("RAY_ADDRESS"):  # starting a node, not joining
        _loopback_node()  # before Ray is imported, where possible
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
        # A local service is a loopback service: Ray's own ports stay off the network
        # (see _loopback_node; Serve's replicas still open one port each, see
        # exposed_listeners).
        _node_ip_address="127.0.0.1",
        include_dashboard=True,
        dashboard_host="127.0.0.1",
        dashboard_port=settings.dashboard_port,
        log_to_driver=False,
    )


@dataclass(frozen=True)
class Listener:
    """A listening TCP socket of one of the service's processes."""

    host: str
    port: int
    pid: int
    process: str  # Ray's process title without "ray::", else the program's name

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1, or an IPv4-mapped loopback (gRPC binds ``[::ffff:127.0.0.1]``)."""
    ip = ipaddress.ip_address(host)
    mapped = getattr(ip, "ipv4_mapped", None)
    return ip.is_loopback or bool(mapped and mapped.is_loopback)


def _listening_inodes() -> dict[int, tuple[str, int]]:
    """Socket inode -> (host, port) of every listening TCP socket, from /proc/net."""
    found: dict[int, tuple[str, int]] = {}
    for table in ("tcp", "tcp6"):
        try:
            rows = Path(f"/proc/net/{table}").read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if len(fields) < 10 or fields[3] != "0A":  # 0A: LISTEN
                continue
            host_hex, port_hex = fields[1].split(":")
            raw = bytes.fromhex(host_hex)
            if sys.byteorder == "little":  # /proc prints each 32-bit word in host order
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found[int(fields[9])] = (str(ipaddress.ip_address(raw)), int(port_hex, 16))
    return found


def _process_tree(root: int) -> list[int]:
    """``root`` and all its descendants (a local Ray's daemons and workers descend from
    the process that called ``ray.init``)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo.extend(children.get(pid, []))
    return tree


def _process_name(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace").split("\0")
    except OSError:
        return "?"
    argv = [a for a in argv if a]
    if not argv:
        return "?"
    if argv[0].startswith("ray::"):  # Ray's process titles: ray::ServeReplica:aipp:Ingress
        return argv[0].removeprefix("ray::").strip()
    name = Path(argv[0].split()[0]).name
    scripts = [Path(a).name for a in argv[1:] if a.endswith(".py")]
    return f"{name} {scripts[0]}" if name.startswith("python") and scripts else name


def listeners(root_pid: int | None = None) -> list[Listener]:
    """Every listening TCP socket of ``root_pid``'s process tree (default: this process).

    Linux only (reads /proc); elsewhere it finds nothing.
    """
    inodes = _listening_inodes()
    found = []
    for pid in _process_tree(root_pid or os.getpid()):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                host, port = inodes[int(target[8:-1])]
                found.append(Listener(host, port, pid, _process_name(pid)))
    return sorted(set(found), key=lambda item: (item.process, item.port))


def exposed_listeners(root_pid: int | None = None) -> list[Listener]:
    """The listening sockets of the service's processes that are not loopback-only.

    With a loopback node, Ray 2.60 still opens one port per Serve replica on every
    interface: the inter-deployment gRPC server (``[::]:0``, hard-coded in
    ``ray/serve/_private/replica.py``; it checks the Ray token). The HTTP proxy is here
    too when ``AIPP_HOST`` is not loopback.
    """
    return [item for item in listeners(root_pid) if not is_loopback(item.host)]


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


def wait_running(
    settings: Settings, timeout_s: float = 600, on_tick=None, stop: threading.Event | None = None
) -> dict:
    """Block until the app is RUNNING; raise with Serve's own message if it fails, or
    ``Stopped`` once ``stop`` is set (a signal must not wait out a 600 s model load)."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        if stop is not None and stop.is_set():
            raise Stopped(f"stopped while the application was {last or 'starting'}")
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
