"""Phase 3 RayJob: the batch pipeline on its own short-lived cluster."""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path

from cluster.render.common import (
    API_VERSION,
    BATCH_ENTRYPOINT,
    GPU_ONDEMAND,
    GPU_SPOT,
    dump_yaml,
)
from cluster.render.pods import (
    _autoscaler_options,
    _container,
    _cpu_group,
    _gpu_group,
    _head_group,
    _labels,
    _metadata,
    _pod_template,
    _resources,
    auth_options,
    ray_auth_env,
)
from cluster.render.serve_config import _app, load_serve_config, offline_model_env


def rayjob_batch(values: Mapping, root: Path | str | None = None) -> dict:
    """The batch pipeline on its own short-lived cluster; GPUs scale from zero."""
    batch = values["batch"]
    gpu_env = _app(load_serve_config(3, root=root)).get("runtime_env", {}).get("env_vars", {})
    gpu_env = {**gpu_env, **offline_model_env(values)}
    runtime_env = {"env_vars": {k: str(v) for k, v in gpu_env.items()}}
    gpus = values["batch"]["gpus"]
    entrypoint = " ".join(
        [
            BATCH_ENTRYPOINT,
            "--input",
            shlex.quote(batch["input"]),
            "--output",
            shlex.quote(batch["output"]),
            # GPU groups start at zero: without this the plan would size itself from the
            # free resources at start (no GPU) and never ask the autoscaler for one.
            "--device",
            "gpu",
            "--gpus",
            str(gpus),
        ]
    )
    submitter = _container(
        "ray-job-submitter",
        values["images"]["cpu"],
        values,
        _resources("500m", "512Mi"),
        env=ray_auth_env(values),
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "RayJob",
        "metadata": _metadata(values, 3, f"{values['name']}-batch", "rayjob"),
        "spec": {
            "entrypoint": entrypoint,
            "runtimeEnvYAML": dump_yaml(runtime_env),
            "shutdownAfterJobFinishes": True,
            "ttlSecondsAfterFinished": batch["ttl_seconds_after_finished"],
            "activeDeadlineSeconds": batch["active_deadline_seconds"],
            "backoffLimit": 0,
            "submitterPodTemplate": _pod_template(
                values,
                _labels(values, 3, "rayjob-submitter"),
                [submitter],
                restart_policy="Never",
            ),
            "rayClusterSpec": {
                "rayVersion": values["ray_version"],
                "authOptions": auth_options(values),
                "enableInTreeAutoscaling": True,
                "autoscalerOptions": _autoscaler_options(values),
                # The driver (the entrypoint) runs on the head and builds the vLLM
                # processor there (transformers, the tokenizer): it needs the GPU image.
                "headGroupSpec": _head_group(
                    3, values, zero_cpus=True, image=values["images"]["gpu"]
                ),
                "workerGroupSpecs": [
                    # ray.data.llm's chat-template, tokenize and detokenize actors are CPU
                    # stages: they land on this group as well as on the GPU ones, and load
                    # transformers and the model's tokenizer files, which only the GPU image
                    # has. So the whole batch cluster runs the GPU image (CUDA is not needed
                    # to import it on a CPU node).
                    _cpu_group(3, values, image=values["images"]["gpu"]),
                    # Batch tolerates preemption (Ray Data retries tasks): spot first,
                    # on-demand only when spot is short. Both scale from zero.
                    _gpu_group(
                        3, values, GPU_SPOT, min_replicas=0, max_replicas=batch["gpu_max_replicas"]
                    ),
                    _gpu_group(
                        3,
                        values,
                        GPU_ONDEMAND,
                        min_replicas=0,
                        max_replicas=values["worker_groups"][GPU_ONDEMAND]["max_replicas"],
                    ),
                ],
            },
        },
    }
