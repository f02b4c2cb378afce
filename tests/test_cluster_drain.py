"""What a spot reclaim needs in the rendered manifests (issue 23): a termination grace
period that holds Serve's graceful shutdown, a preStop drain on every worker pod, a
graceful Serve shutdown on a RayCluster head. Checked offline, like the other manifests
(no Kubernetes here); the preStop scripts are parsed by a real ``sh``.
"""

from __future__ import annotations

import subprocess

import pytest
import yaml

from cluster import render as r
from cluster.render.drain import DRAIN_MARGIN_S, longest_shutdown_s


def _pods(doc: dict) -> list[tuple[str, dict]]:
    """(group name, pod spec) of every Ray pod in a RayCluster/RayService/RayJob."""
    spec = doc["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec") or spec
    pods = [("head", cluster["headGroupSpec"]["template"]["spec"])]
    pods += [(g["groupName"], g["template"]["spec"]) for g in cluster.get("workerGroupSpecs", [])]
    return pods


def _pre_stop(pod: dict) -> str | None:
    hooks = {
        " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
        for c in pod["containers"]
        if "lifecycle" in c
    }
    assert len(hooks) <= 1
    return hooks.pop() if hooks else None


@pytest.fixture(scope="module")
def phases() -> dict[int, dict[str, dict]]:
    return {
        p: {f: yaml.safe_load(t) for f, t in r.render_manifests(p).items() if "serve" not in f}
        for p in r.PHASES
    }


def _serve_cfg(phase: int) -> dict:
    return r.build_serve_config(phase, r.load_values())


def test_every_worker_pod_drains_before_it_goes(phases):
    seen = 0
    for phase, docs in phases.items():
        longest = longest_shutdown_s(_serve_cfg(phase))
        for fname, doc in docs.items():
            for group, pod in _pods(doc):
                grace = pod["terminationGracePeriodSeconds"]
                if group == "head":
                    continue
                seen += 1
                hook = _pre_stop(pod)
                assert hook and "ray drain-node --reason DRAIN_NODE_REASON_PREEMPTION" in hook, (
                    fname,
                    group,
                )
                assert "ServeReplica:" in hook  # waits for this node's replicas to leave
                assert grace >= longest + DRAIN_MARGIN_S, (fname, group, grace, longest)
                # the drain deadline Ray is told falls inside Kubernetes' grace period
                deadline = int(hook.split("--deadline-remaining-seconds ")[1].split()[0])
                assert 0 < deadline < grace
    assert seen >= 5  # phase 2: 1 group; phase 3: 3 in the RayService, 3 in the RayJob


def test_gpu_replicas_get_their_graceful_shutdown_in_the_serve_config():
    for phase in (2, 3):
        deps = {d["name"]: d for d in _serve_cfg(phase)["applications"][0]["deployments"]}
        for name in ("Transcriber", "Summarizer"):
            assert deps[name]["graceful_shutdown_timeout_s"] == 120
            assert deps[name]["graceful_shutdown_wait_loop_s"] == 1


def test_heads_without_gcs_fault_tolerance_shut_serve_down_gracefully(phases):
    for phase, docs in phases.items():
        for fname, doc in docs.items():
            head = _pods(doc)[0][1]
            assert head["terminationGracePeriodSeconds"] >= 30
            hook = _pre_stop(head)
            if phase in (1, 2):
                assert hook and "serve shutdown --yes" in hook, (phase, fname)
            else:  # GCS state lives in Redis: a head restart keeps the app
                assert hook is None, (phase, fname)


def test_pre_stop_scripts_are_valid_shell(phases):
    scripts = set()
    for docs in phases.values():
        for doc in docs.values():
            for _, pod in _pods(doc):
                for c in pod["containers"]:
                    if "lifecycle" in c:
                        command = c["lifecycle"]["preStop"]["exec"]["command"]
                        assert command[:2] == ["/bin/sh", "-c"]
                        scripts.add(command[2])
    assert len(scripts) == 2
    for script in scripts:
        subprocess.run(["sh", "-n", "-c", script], check=True)


def test_a_grace_period_shorter_than_the_replica_drain_is_refused():
    with pytest.raises(r.RenderError, match="drain.worker_grace_period_seconds"):
        r.render_manifests(3, {"drain": {"worker_grace_period_seconds": 60}})
    with pytest.raises(r.RenderError, match="drain.head_grace_period_seconds"):
        r.render_manifests(1, {"drain": {"head_grace_period_seconds": 5}})
    # phase 3's head runs no replicas: its grace period is not held to them
    r.render_manifests(3, {"drain": {"head_grace_period_seconds": 5}})
