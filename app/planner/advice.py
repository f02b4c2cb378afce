"""Serve and KubeRay replica settings from a plan's sizing.

The output is the ``serve-overrides`` document that ``aipp cluster render --values``
reads (shape documented in docs/planner.md)::

    deployments:  {Transcriber|Summarizer|Ingress: {min_replicas, max_replicas}}
    worker_groups: {gpu-ondemand|gpu-spot: {min_replicas, max_replicas}}
    gpu_type: L4

* ``max_replicas`` of a model deployment: the GPUs sized for the peak hour.
* ``min_replicas``: the GPUs the average active hour needs (peak / peak_factor), at
  least 1 while GPUs stay on all month, 0 when they only run in the active hours.
* Packed layout: each GPU holds one Transcriber and one Summarizer (num_gpus 0.5 each),
  so both deployments get the packed GPU counts.
* Ingress only routes and awaits: 1 to max(2, ceil(model replicas / 4)).
* Worker groups count nodes (instances): the on-demand group carries the baseline and
  the on-demand share of the peak; the spot group carries ``floor(peak * spot_share)``
  GPUs and scales from 0 unless the baseline spills onto it.
"""

from __future__ import annotations

import math
from typing import Any

import yaml

from app.planner.model import (
    CostModel,
    DeploymentReplicas,
    Option,
    PlanInput,
    ReplicaAdvice,
    gpus_needed,
)


def replica_advice(cm: CostModel, inp: PlanInput, chosen: Option, gpu_type: str) -> ReplicaAdvice:
    v = inp.tasks_per_month
    v_avg = v / inp.peak_factor
    if chosen == "packed":
        assert cm.k_packed is not None
        peak = gpus_needed(cm.k_packed, v)
        base = gpus_needed(cm.k_packed, v_avg)
        t_min, t_max, s_min, s_max = base, peak, base, peak
        total_peak, total_base = peak, base
    else:
        t_max, s_max = gpus_needed(cm.k_stt, v), gpus_needed(cm.k_llm, v)
        t_min, s_min = gpus_needed(cm.k_stt, v_avg), gpus_needed(cm.k_llm, v_avg)
        total_peak, total_base = t_max + s_max, t_min + s_min
    if not inp.always_on:
        t_min = s_min = total_base = 0
    ingress_max = max(2, math.ceil((t_max + s_max) / 4))

    od_gpus, _spot_gpus, od_inst, spot_inst = cm.split(total_peak)
    base_od = min(total_base, od_gpus)
    base_spot = total_base - base_od
    g = cm.gpus_per_instance
    return ReplicaAdvice(
        deployments={
            "Transcriber": DeploymentReplicas(min_replicas=t_min, max_replicas=t_max),
            "Summarizer": DeploymentReplicas(min_replicas=s_min, max_replicas=s_max),
            "Ingress": DeploymentReplicas(min_replicas=1, max_replicas=ingress_max),
        },
        worker_groups={
            "gpu-ondemand": DeploymentReplicas(
                min_replicas=math.ceil(base_od / g), max_replicas=od_inst
            ),
            "gpu-spot": DeploymentReplicas(
                min_replicas=math.ceil(base_spot / g), max_replicas=spot_inst
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
