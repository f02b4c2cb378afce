"""Idle CPU of the whole service: Ray head, Serve, every replica, embedded Redis.

After start-up and a settling period, sums the CPU time (user + system) of every
process of the service over a window (default 60 s) and reports it as a share of
one core, per process group, in two phases:

1. nothing queued;
2. tasks queued but not yet runnable (``--queued`` tasks in retry backoff), so the
   runner has work in its queue yet nothing to do: what a polling loop would burn.

Goal (issue 13): under 5 % of one core when nothing is queued. Ray's own daemons
(GCS, raylet, dashboard, Serve controller and proxy) are part of "the whole
service" and are reported separately, so the application's share is visible.

    python -m bench.idle_cpu                     # 60 s per phase
    python -m bench.idle_cpu --seconds 30 --settle 30

``--models warm --models zero`` compares, in one run, the model deployments kept at one
replica (the shape before serve_config.yaml scaled them to zero when idle) with the
shipped rule, its 10-minute delay cut to ``--zero-after`` seconds so the run need not
wait it out (the measuring window starts once all three have no replica).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from bench.overhead import machine  # noqa: E402


def group_of(proc: psutil.Process) -> str:
    """A readable group for a process of the service."""
    try:
        name = proc.name()
        cmd = " ".join(proc.cmdline())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "gone"
    if "ServeReplica:" in name:
        return "replica:" + name.rsplit(":", 1)[-1]
    if "ServeController" in name or "ServeController" in cmd:
        return "serve:controller"
    if "ProxyActor" in name or "ProxyActor" in cmd:
        return "serve:proxy"
    if "redis-server" in name or "redis-server" in cmd:
        return "redis"
    args = proc.cmdline() if cmd else []
    if any(a.endswith("/aipp") for a in args[:2]) and "serve" in args:
        return "aipp serve (CLI)"
    # Named by what they run: a temp dir called aipp-idle and "gcs_server" once matched
    # the CLI's old test ("aipp" and "serve" anywhere in the command line).
    if "gcs_server" in name or "gcs_server" in cmd:
        return "ray:gcs_server"
    if "dashboard/dashboard.py" in cmd:
        return "ray:dashboard"
    return "ray:" + (name.split()[0] if name else "other")


def service_processes(roots: list[psutil.Process], temp_dir: Path) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if any(str(temp_dir) in part for part in proc.info["cmdline"] or []):
                found[proc.pid] = proc
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    for root in [*roots, *list(found.values())]:
        try:
            found.setdefault(root.pid, root)
            for child in root.children(recursive=True):
                found.setdefault(child.pid, child)
        except psutil.NoSuchProcess:
            continue
    return list(found.values())


def cpu_seconds(proc: psutil.Process) -> float | None:
    try:
        t = proc.cpu_times()
        return t.user + t.system
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return None


#: CPU seconds by (process group, thread name).
ThreadTotals = dict[tuple[str, str], float]


def thread_seconds(proc: psutil.Process) -> ThreadTotals:
    """CPU seconds per thread, keyed by (process group, thread name)."""
    out: ThreadTotals = defaultdict(float)
    group = group_of(proc)
    try:
        threads = proc.threads()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return out
    for t in threads:
        try:
            name = Path(f"/proc/{proc.pid}/task/{t.id}/comm").read_text().strip()
        except OSError:
            continue
        out[(group, name)] += t.user_time + t.system_time
    return out


def thread_totals(procs: list[psutil.Process]) -> ThreadTotals:
    """CPU seconds so far of every thread of ``procs``, by (process group, thread name)."""
    totals: ThreadTotals = defaultdict(float)
    for proc in procs:
        for key, value in thread_seconds(proc).items():
            totals[key] += value
    return totals


def busiest_threads(before: ThreadTotals, after: ThreadTotals, seconds: float, n: int) -> list[str]:
    """The ``n`` threads that used the most CPU between two totals: which loop wakes where."""
    rows = sorted(((v - before.get(k, 0.0), k) for k, v in after.items()), reverse=True)
    return [f"{100 * d / seconds:.2f}% {g} | {name}" for d, (g, name) in rows[:n]]


def measure(roots: list[psutil.Process], temp_dir: Path, seconds: float, threads: int = 0) -> dict:
    procs = service_processes(roots, temp_dir)
    before = {p.pid: (p, cpu_seconds(p)) for p in procs}
    threads_before = thread_totals(procs) if threads else None
    time.sleep(seconds)
    busiest = (
        busiest_threads(threads_before, thread_totals(procs), seconds, threads)
        if threads_before is not None
        else None
    )
    groups: dict[str, float] = defaultdict(float)
    for proc in service_processes(roots, temp_dir):
        start = before.get(proc.pid, (proc, 0.0))[1] or 0.0
        end = cpu_seconds(proc)
        if end is None:
            continue
        groups[group_of(proc)] += max(0.0, end - start)
    total = sum(groups.values())
    app = sum(v for k, v in groups.items() if k.startswith(("replica:", "redis")))
    figures = {
        "seconds": seconds,
        "processes": len(procs),
        "total_pct_of_one_core": round(100 * total / seconds, 2),
        "app_pct_of_one_core": round(100 * app / seconds, 2),
        "by_group_pct": {k: round(100 * v / seconds, 2) for k, v in sorted(groups.items())},
    }
    if busiest is not None:
        figures["busiest_threads_pct"] = busiest
    return figures


def queue_waiting_tasks(data_dir: Path, n: int, tenant: str = "bench-idle") -> list[str]:
    """``n`` tasks of ``tenant`` in retry backoff for an hour: queued, not claimable yet."""
    from app.storage.sql import keys
    from app.storage.sql.engine import make_engine
    from app.storage.sql.models import Task
    from app.storage.sql.tasks import TaskStore

    engine = make_engine(f"sqlite:///{data_dir / 'aipp.db'}")
    try:
        owner = keys.ensure_tenant(engine, tenant)
        store = TaskStore(engine)
        ids = []
        later = datetime.now(UTC) + timedelta(hours=1)
        for i in range(n):
            task = store.create(tenant_id=owner.id, audio_uri=f"file:///nowhere/{i}")
            ids.append(task.id)
        from sqlmodel import Session, col, update

        with Session(engine) as session:
            session.exec(update(Task).where(col(Task.id).in_(ids)).values(not_before=later))
            session.commit()
        return ids
    finally:
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--settle", type=float, default=45, help="Wait after ready first.")
    parser.add_argument("--queued", type=int, default=20)
    parser.add_argument(
        "--threads", type=int, default=0, help="Also list the N busiest threads (idle phase)."
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "idle_cpu.json")
    parser.add_argument(
        "--env-set",
        action="append",
        choices=["default", "aipp", "aipp-without"],
        help="Ray/Serve settings at `ray start`: Ray's defaults, or what `aipp serve` sets "
        "when it starts Ray (app/core/ray_env.py SERVE_ENV). Repeat to compare in one run.",
    )
    parser.add_argument(
        "--without",
        action="append",
        default=[],
        help="A SERVE_ENV name the `aipp-without` set leaves at Ray's default (repeatable).",
    )
    parser.add_argument(
        "--models",
        action="append",
        choices=["shipped", "warm", "zero"],
        help="The model deployments as serve_config.yaml ships them, kept at one replica "
        "(min_replicas 1), or scaled to zero after --zero-after s (repeatable).",
    )
    parser.add_argument("--zero-after", type=float, default=20.0)
    parser.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="Rounds over every set and shape, interleaved (a shared machine drifts: the "
        "same service measured minutes apart differed by up to 40 %%).",
    )
    args = parser.parse_args()
    sets = args.env_set or ["aipp"]
    shapes = args.models or ["shipped"]
    results: dict = {"machine": machine(), "runs": {}}
    for round_ in range(args.repeat):
        for name in sets:
            for shape in shapes:
                key = name if shape == "shipped" else f"{name}/{shape}"
                key += f" #{round_ + 1}" if args.repeat > 1 else ""
                results["runs"][key] = run_once(args, name, shape)
                print(json.dumps({key: results["runs"][key]}, indent=2), flush=True)
    totals: dict[str, list[float]] = defaultdict(list)
    for key, run in results["runs"].items():
        totals[key.split(" #")[0]].append(run["nothing_queued"]["total_pct_of_one_core"])
    results["median_pct_nothing_queued"] = {k: statistics.median(v) for k, v in totals.items()}
    if {"default", "aipp"} <= set(results["runs"]):
        for phase, figures in results["runs"]["aipp"].items():
            if isinstance(figures, dict) and "total_pct_of_one_core" in figures:
                a = figures["total_pct_of_one_core"]
                d = results["runs"]["default"][phase]["total_pct_of_one_core"]
                results.setdefault("ratio_aipp_over_default", {})[phase] = round(a / d, 2)
    print(json.dumps(results, indent=2))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))


def start_head_with_env(temp_dir: Path, env: dict[str, str]):
    """A 4-CPU Ray head started with ``env`` set: every Ray process reads it at start."""
    from tests.cluster_fixtures import start_head

    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return start_head(temp_dir, num_cpus=4)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


MODEL_DEPLOYMENTS = ("Transcriber", "Summarizer", "Diarizer")


def serve_config_for(shape: str, zero_after_s: float, out: Path) -> list[str]:
    """``aipp serve`` arguments for the model deployments' ``shape``."""
    if shape == "shipped":
        return []
    import yaml

    from app.cli.deploy import load_config

    config = load_config()
    for dep in config["applications"][0]["deployments"]:
        if dep["name"] in MODEL_DEPLOYMENTS:
            auto = dep["autoscaling_config"]
            if shape == "warm":
                auto["min_replicas"] = 1
            else:
                auto.update(min_replicas=0, downscale_to_zero_delay_s=zero_after_s)
    out.write_text(yaml.safe_dump(config))
    return ["--config", str(out)]


def wait_models_at_zero(svc, timeout_s: float = 600) -> float:
    """Seconds until no model deployment has a replica (Serve's own view)."""
    from app.cli.deploy import serve_details
    from app.core.settings import Settings

    os.environ["RAY_AUTH_MODE"] = "token"  # the dashboard SDK, as the session's clients
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout_s:
        deps = serve_details(Settings(dashboard_port=svc.dashboard_port))["applications"]["aipp"][
            "deployments"
        ]
        if all(not deps[name]["replicas"] for name in MODEL_DEPLOYMENTS if name in deps):
            return round(time.monotonic() - t0, 1)
        time.sleep(2)
    raise RuntimeError(f"model deployments still up after {timeout_s} s")


def timed_task(url: str, instruction: str, diarize: bool, timeout_s: float = 600) -> float:
    """Seconds from POST /v1/tasks (the JFK clip) to its end; the instruction differs per
    call so no result comes from the cache."""
    import httpx

    from app.core.task_vocabulary import TERMINAL_STATUSES

    audio = (REPO / "tests" / "data" / "jfk.flac").read_bytes()
    t0 = time.perf_counter()
    with httpx.Client(base_url=url, timeout=120) as client:
        data = {"instruction": instruction, "diarize": str(diarize).lower()}
        r = client.post("/v1/tasks", files={"file": ("jfk.flac", audio)}, data=data)
        r.raise_for_status()
        task_id = r.json()["id"]
        while time.perf_counter() - t0 < timeout_s:
            task = client.get(f"/v1/tasks/{task_id}").json()
            if task["status"] in TERMINAL_STATUSES:
                if task["status"] != "succeeded":
                    raise RuntimeError(f"task {task_id} {task['status']}: {task.get('error')}")
                return round(time.perf_counter() - t0, 2)
            time.sleep(0.25)
    raise TimeoutError(f"task {task_id} not done in {timeout_s} s")


def wake_cost(url: str) -> dict:
    """What scaling to zero costs the next caller: the same 11 s task with the models at
    zero (a cold start) and right after (warm), then with diarization, whose Diarizer the
    first two left at zero."""
    return {
        "task_cold_s": timed_task(url, "Summarize (cold).", False),
        "task_warm_s": timed_task(url, "Summarize (warm).", False),
        "diarized_cold_diarizer_s": timed_task(url, "Who spoke (cold).", True),
        "diarized_warm_s": timed_task(url, "Who spoke (warm).", True),
    }


def run_once(args: argparse.Namespace, env_set: str, shape: str = "shipped") -> dict:
    from app.core.ray_env import RAY_DEFAULT_ENV, SERVE_ENV
    from tests.cluster_fixtures import start_service, stop_cluster

    tmp = Path(tempfile.mkdtemp(prefix="aipp-idle-"))
    temp_dir = Path(f"/tmp/aipp-idle-{os.getpid()}-{env_set}")
    env = dict(RAY_DEFAULT_ENV if env_set == "default" else SERVE_ENV)
    if env_set == "aipp-without":
        for key in args.without:
            env[key] = RAY_DEFAULT_ENV[key]
    cluster = start_head_with_env(temp_dir, env)
    results: dict = {"env": env, "models": shape}
    try:
        serve_args = serve_config_for(shape, args.zero_after, tmp / "serve_config.yaml")
        svc, proc = start_service(cluster, tmp / "data", env, tmp / "serve.log", 600, serve_args)
        try:
            roots = [psutil.Process(proc.pid)]
            if shape == "zero":
                results["models_at_zero_after_s"] = wait_models_at_zero(svc)
            time.sleep(args.settle)
            results["nothing_queued"] = measure(roots, temp_dir, args.seconds, args.threads)
            if shape == "zero":
                results["wake"] = wake_cost(svc.url)
            if args.queued:  # --queued 0: the idle phase only
                queue_waiting_tasks(tmp / "data", args.queued)
                time.sleep(5)
                results[f"{args.queued}_queued_in_backoff"] = measure(roots, temp_dir, args.seconds)
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=60)
            except Exception:
                proc.kill()
    finally:
        stop_cluster(temp_dir)
    return results


if __name__ == "__main__":
    main()
