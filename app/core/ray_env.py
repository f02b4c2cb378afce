"""Ray and Serve settings for a service that is mostly idle (issue 23, idle cost).

Ray's processes read them from their environment at start, so they are set before Ray
starts: by `aipp serve` when it starts Ray itself, and in every Ray container of the
rendered KubeRay manifests (``CLUSTER_ENV``). Each one only slows bookkeeping that no
failure path waits on; health checks (replicas and proxies every 10 s), metrics scrapes
and autoscaling decisions keep Ray's defaults. Measured in docs/benchmarks.md ("The
cluster shape"): bench/idle_cpu.py --env-set default/aipp.

Tried and dropped (no measurable gain): Serve's event-loop monitoring every 30 s instead
of 5, task events every 5 s instead of 1.
"""

from __future__ import annotations

import os

SERVE_ENV = {
    # The Serve controller's reconcile loop: 10 Hz by default, most of its idle CPU. At
    # 1 Hz a deploy, scale decision or replica restart starts at most 1 s later (scaling
    # delays are 5-300 s; replica health checks stay every 10 s).
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "1.0",
    # Every replica and every handle's router hands its cached request metrics to Ray's
    # metrics agent every 100 ms: ten wake-ups a second each, idle or not. Once a second
    # is still ten times more often than any Prometheus scrape.
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "1000",
    # The dashboard agent's node and worker statistics (psutil over every worker process)
    # every 10 s instead of 5: Prometheus' usual scrape interval is 15 s or more.
    "REPORTER_UPDATE_INTERVAL_MS": "10000",
    # The agent checks its raylet is alive every 0.4 s, to exit with it; every 2 s is
    # enough (the GCS detects a dead raylet by its own health checks).
    "RAY_DASHBOARD_AGENT_CHECK_PARENT_INTERVAL_S": "2",
    # The log monitor (which streams worker logs to the driver) globs the log folder for
    # new files on each of its 10 Hz passes while there are under 1,000 files; here every
    # 2 s. A new worker's first lines reach the driver's console up to 2 s later; the log
    # files themselves are written as before.
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "LOG_NAME_UPDATE_INTERVAL_S": "2",
    # The GCS pulls every raylet's pending-resource load each second for the autoscaler;
    # a Ray started by `aipp serve` is one machine, with no autoscaler to feed.
    "RAY_gcs_pull_resource_loads_period_milliseconds": "5000",
}

#: What an autoscaling cluster keeps at Ray's value: the autoscaler reads the pending
#: loads, and a 5 s pull would delay every scale-up by up to 5 s.
AUTOSCALER_NEEDS = frozenset({"RAY_gcs_pull_resource_loads_period_milliseconds"})

#: The settings every Ray container of a KubeRay cluster gets (cluster/render/pods.py).
CLUSTER_ENV = {k: v for k, v in SERVE_ENV.items() if k not in AUTOSCALER_NEEDS}

#: Ray 2.60's own values of the same settings, for comparisons (bench/idle_cpu.py); the
#: agent's parent check (0.4 s) is left unset: Ray reads it as an integer.
RAY_DEFAULT_ENV = {
    "RAY_SERVE_CONTROL_LOOP_INTERVAL_S": "0.1",
    "RAY_SERVE_METRICS_EXPORT_INTERVAL_MS": "100",
    "REPORTER_UPDATE_INTERVAL_MS": "5000",
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "1000",
    "LOG_NAME_UPDATE_INTERVAL_S": "0.5",
    "RAY_gcs_pull_resource_loads_period_milliseconds": "1000",
}


def apply_serve_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Put :data:`SERVE_ENV` into ``environ`` (default: this process's) where unset."""
    target = os.environ if environ is None else environ
    for key, value in SERVE_ENV.items():
        target.setdefault(key, value)
    return {key: target[key] for key in SERVE_ENV}
