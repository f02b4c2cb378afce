"""What a Ray pod needs to be taken away cleanly: a grace period and a preStop drain.

A spot reclaim, a scale-down, a node upgrade or a RayService upgrade all end the same way
for a pod: Kubernetes runs its preStop hook, then sends SIGTERM, then SIGKILL once
``terminationGracePeriodSeconds`` have passed since the delete. Without a hook the raylet
dies on SIGTERM with its replicas, and every request they held fails.

Worker pods therefore drain first (``ray drain-node``, reason preemption, with a deadline
just inside the grace period). Ray stops scheduling onto a draining node, and Serve starts
replacements for its replicas elsewhere, then stops them with their own
``graceful_shutdown_timeout_s``: the Transcriber finishes the audio it holds, the
TaskRunner hands its leases back. The hook then waits until no Serve replica is left on
the node (or the deadline), so an idle node leaves at once and a busy one only as late as
it must. The head of a RayCluster (phases 1 and 2: no GCS fault tolerance, its loss ends
the cluster) shuts Serve down gracefully instead; a phase 3 head keeps serving state in
the external Redis and only gets the grace period.

:func:`check_drain` refuses values whose grace period is shorter than the Serve config's
longest ``graceful_shutdown_timeout_s`` plus a margin: Kubernetes would kill a replica
Serve is still draining.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# Seconds between the end of the longest replica drain and SIGKILL: the raylet's own exit
# and the preStop hook's polling.
DRAIN_MARGIN_S = 10
# Serve's default graceful_shutdown_timeout_s, for a deployment that does not set one.
SERVE_DEFAULT_SHUTDOWN_S = 20


def worker_pre_stop(grace_s: int) -> list[str]:
    """preStop for a worker pod: drain this node, wait for its Serve replicas to leave."""
    deadline = max(1, grace_s - DRAIN_MARGIN_S // 2)
    script = (
        "ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION "
        "--reason-message 'pod terminating (preStop)' "
        f"--deadline-remaining-seconds {deadline} || true; "
        f"end=$(( $(date +%s) + {deadline} )); "
        "while pgrep -f 'ServeReplica:' >/dev/null && [ $(date +%s) -lt $end ]; do sleep 1; done"
    )
    return ["/bin/sh", "-c", script]


def head_pre_stop(grace_s: int) -> list[str]:
    """preStop for a RayCluster head (phases 1, 2): stop Serve gracefully, bounded."""
    bound = max(1, grace_s - DRAIN_MARGIN_S // 2)
    return ["/bin/sh", "-c", f"timeout {bound} serve shutdown --yes || true"]


def add_drain(group: dict, grace_s: int, pre_stop: list[str] | None) -> dict:
    """Put the grace period (and the preStop hook, if any) on a group's pod template."""
    spec = group["template"]["spec"]
    spec["terminationGracePeriodSeconds"] = int(grace_s)
    if pre_stop:
        for container in spec["containers"]:
            container["lifecycle"] = {"preStop": {"exec": {"command": list(pre_stop)}}}
    return group


def longest_shutdown_s(serve_cfg: Mapping, *, cpu_only: bool = False) -> float:
    """The longest ``graceful_shutdown_timeout_s`` + wait loop over the Serve config's
    deployments (``cpu_only``: those that ask for no GPU)."""
    longest = 0.0
    for app in serve_cfg.get("applications") or []:
        for dep in app.get("deployments") or []:
            gpus = (dep.get("ray_actor_options") or {}).get("num_gpus") or 0
            if cpu_only and gpus:
                continue
            timeout = dep.get("graceful_shutdown_timeout_s", SERVE_DEFAULT_SHUTDOWN_S)
            loop = dep.get("graceful_shutdown_wait_loop_s", 2)
            longest = max(longest, float(timeout) + float(loop))
    return longest


def check_drain(phase: int, serve_cfg: Mapping, values: Mapping) -> list[str]:
    """Problems: a grace period that cannot hold the longest replica drain."""
    drain = values["drain"]
    problems = []
    need: dict[str, tuple[Any, float]] = {}
    if phase >= 2:  # worker groups exist
        need["worker_grace_period_seconds"] = (
            drain["worker_grace_period_seconds"],
            longest_shutdown_s(serve_cfg),
        )
    if phase in (1, 2):  # the head runs replicas (all of them in phase 1)
        need["head_grace_period_seconds"] = (
            drain["head_grace_period_seconds"],
            longest_shutdown_s(serve_cfg, cpu_only=phase == 2),
        )
    for key, (grace, longest) in need.items():
        if grace < longest + DRAIN_MARGIN_S:
            problems.append(
                f"drain.{key}: {grace} s is shorter than the longest Serve replica drain "
                f"({longest:g} s) plus {DRAIN_MARGIN_S} s; Kubernetes would kill a replica "
                "still finishing its requests"
            )
    return problems
