"""Serve and KubeRay replica settings from a plan's sizing.

The output is the ``serve-overrides`` document that ``aipp cluster render --values``
reads (shape documented in docs/planner.md)::

    deployments:  {Transcriber|Summarizer|Ingress: {min_replicas, max_replicas}}
    worker_groups: {gpu-ondemand|gpu-spot: {min_replicas, max_replicas}}
    gpu_type: L4

* ``max_replicas`` of a model deployment: the pool size at the peak hour (spares included).
* ``min_replicas``: the pool size the average active hour needs (volume / peak_factor),
  at least 1 while GPUs stay on all month, 0 when they only run in the active hours.
* Packed layout: each GPU holds one Transcriber and one Summarizer (num_gpus 0.5 each),
  so both deployments get the packed GPU count.
* Diarizer (when planned): its own deployment, sized like the others.
* Ingress only routes and awaits: 1 to max(2, ceil(model replicas / 4)).
* Worker groups count GPU nodes (instances). The spot share is a share of hours, so the
  spot group may grow to ``ceil(peak GPUs x spot_share)`` and the on-demand group keeps
  the rest plus the baseline.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from app.planner.costs import CostModel
from app.planner.schemas import DeploymentReplicas, Option, PlanInput, ReplicaAdvice


def replica_advice(cm: CostModel, inp: PlanInput, chosen: Option, gpu_type: str) -> ReplicaAdvice:
    v = inp.tasks_per_month
    v_avg = max(1, math.ceil(v / inp.peak_factor))
    peak = cm.size(chosen, v)
    base = cm.size(chosen, v_avg)
    t_max, s_max, d_gpu_max = cm.gpu_counts(chosen, peak)
    t_min, s_min, d_gpu_min = cm.gpu_counts(chosen, base)
    total_peak = cm.total_gpus(chosen, peak)
    total_base = cm.total_gpus(chosen, base)
    sp = cm.spares()
    d_max = peak["diarizer"].gpus + sp if "diarizer" in peak else 0
    d_min = base["diarizer"].gpus + sp if "diarizer" in base else 0
    if not inp.always_on:
        t_min = s_min = d_min = total_base = 0
    ingress_max = max(2, math.ceil((t_max + s_max + d_max) / 4))

    spot_gpus = math.ceil(total_peak * cm.spot_share - 1e-9) if cm.spot_share > 0 else 0
    od_gpus = total_peak - math.floor(total_peak * cm.spot_share + 1e-9)
    base_od = min(total_base, od_gpus)
    base_spot = total_base - base_od
    g = cm.gpus_per_instance
    deployments = {
        "Transcriber": DeploymentReplicas(min_replicas=t_min, max_replicas=t_max),
        "Summarizer": DeploymentReplicas(min_replicas=s_min, max_replicas=s_max),
    }
    if "diarizer" in peak:
        deployments["Diarizer"] = DeploymentReplicas(min_replicas=d_min, max_replicas=d_max)
    deployments["Ingress"] = DeploymentReplicas(min_replicas=1, max_replicas=ingress_max)
    del d_gpu_max, d_gpu_min
    return ReplicaAdvice(
        deployments=deployments,
        worker_groups={
            "gpu-ondemand": DeploymentReplicas(
                min_replicas=math.ceil(base_od / g), max_replicas=math.ceil(od_gpus / g)
            ),
            "gpu-spot": DeploymentReplicas(
                min_replicas=math.ceil(base_spot / g), max_replicas=math.ceil(spot_gpus / g)
            ),
        },
        gpu_type=gpu_type,
    )


def advice_document(advice: ReplicaAdvice) -> dict[str, Any]:
    """The plain dict the cluster renderer consumes (key order kept)."""
    return {
        "deployments": {
            name: {"min_replicas": r.min_replicas, "max_replicas": r.max_replicas}
            for name, r in advice.deployments.items()
        },
        "worker_groups": {
            name: {"min_replicas": r.min_replicas, "max_replicas": r.max_replicas}
            for name, r in advice.worker_groups.items()
        },
        "gpu_type": advice.gpu_type,
    }


def advice_yaml(advice: ReplicaAdvice, header: list[str] | None = None) -> str:
    body = yaml.safe_dump(advice_document(advice), sort_keys=False, default_flow_style=None)
    lines = [f"# {h}" for h in (header or [])]
    return "\n".join(lines + [body.rstrip()]) + "\n"
