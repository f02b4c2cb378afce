"""Custom Serve autoscaling policy for the TaskRunner: replicas follow the task queue.

Ray Serve (2.60) pickles this module by value into the controller, so it
imports nothing from ``app``: only the standard library. Each runner replica
reports ``queued_tasks`` (the database's queue depth, the same number on every
replica) and ``running_tasks`` (its own) through ``record_autoscaling_stats``.
``target_ongoing_requests`` in serve_config.yaml is read as "tasks per replica"
(set it to ``AIPP_WORKER_CONCURRENCY``). Serve applies min/max replicas and the
upscale/downscale delays around this function.
"""

from __future__ import annotations

import math
from typing import Any


def queue_depth_policy(ctx: Any) -> tuple[int, dict[str, Any]]:
    metrics = ctx.aggregated_metrics or {}
    queued = max((metrics.get("queued_tasks") or {}).values(), default=0.0)
    running = sum((metrics.get("running_tasks") or {}).values())
    per_replica = ctx.config.target_ongoing_requests or 1
    desired = math.ceil((queued + running) / per_replica) if queued + running else 0
    return max(desired, ctx.capacity_adjusted_min_replicas), {}
