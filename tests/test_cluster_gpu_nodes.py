"""GPU nodes Karpenter can launch, compile caches on a volume, pinned images (issue 28).

Offline like tests/test_cluster_manifests.py (whose helpers and rendering it reuses):
each test fails against the manifests rendered before issue 28.
"""

from __future__ import annotations

import re

import pytest
import yaml

from cluster import render as r
from tests.test_cluster_manifests import (
    DOCKERFILE,
    ROOT,
    VALUES,
    _docs,
    _gpu_groups,
    _groups,
    _yaml,
)


@pytest.fixture(scope="module")
def rendered() -> dict[int, dict[str, str]]:
    """A fresh default rendering of every phase: {phase: {file: text}}."""
    return {p: r.render_manifests(p) for p in r.PHASES}


KARPENTER_NODEPOOLS = ROOT / "cluster" / "karpenter" / "gpu-nodepools.yaml"
# Labels Karpenter (AWS provider) derives from an instance type or sets itself: it knows
# them before a node exists. Anything else a pod requires must come from a NodePool.
KARPENTER_WELL_KNOWN = (
    "karpenter.sh/capacity-type",
    "karpenter.sh/nodepool",
    "karpenter.k8s.aws/instance-",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/",
    "kubernetes.io/arch",
    "kubernetes.io/os",
)


def _required_terms(pod: dict) -> list[tuple[str, str, list[str]]]:
    terms = [(k, "In", [v]) for k, v in (pod.get("nodeSelector") or {}).items()]
    aff = ((pod.get("affinity") or {}).get("nodeAffinity") or {}).get(
        "requiredDuringSchedulingIgnoredDuringExecution"
    )
    if aff:
        (term,) = aff["nodeSelectorTerms"]  # one term: every expression must hold
        terms += [(e["key"], e["operator"], e.get("values", [])) for e in term["matchExpressions"]]
    return terms


def _holds(op: str, wanted: list[str], have: list[str]) -> bool:
    if op == "In":
        return bool(set(wanted) & set(have))
    if op == "Gt":
        return any(int(v) > int(wanted[0]) for v in have)
    if op == "Exists":
        return bool(have)
    raise AssertionError(f"operator {op} not modelled")


def karpenter_problems(pod: dict, nodepool: dict) -> list[str]:
    """Why Karpenter would leave this pod Pending rather than launch a node of this
    NodePool (empty: it can launch one). Karpenter's scheduling model, in small: every
    required label must be one a new node of the NodePool is known to carry."""
    template = nodepool["spec"]["template"]
    labels = (template.get("metadata") or {}).get("labels") or {}
    reqs = {r["key"]: r for r in template["spec"]["requirements"]}
    problems = []
    for key, op, wanted in _required_terms(pod):
        if key in labels:
            ok = _holds(op, wanted, [labels[key]])
        elif key in reqs:
            assert reqs[key]["operator"] == "In", reqs[key]
            ok = _holds(op, wanted, reqs[key]["values"])
        elif key.startswith(KARPENTER_WELL_KNOWN):
            ok = True  # an instance label the NodePool leaves open
        else:
            ok = False
            problems.append(f"requires {key}, which no node carries before it runs")
            continue
        if not ok:
            problems.append(f"requires {key} {op} {wanted}; the NodePool offers otherwise")
    tolerations = pod.get("tolerations") or []
    for taint in template["spec"].get("taints") or []:
        if not any(
            t["key"] == taint["key"]
            and (t["operator"] == "Exists" or t.get("value") == taint.get("value"))
            and t.get("effect") in (None, taint["effect"])
            for t in tolerations
        ):
            problems.append(f"does not tolerate the taint {taint}")
    return problems


def _nodepools() -> list[dict]:
    return [
        d for d in yaml.safe_load_all(KARPENTER_NODEPOOLS.read_text()) if d["kind"] == "NodePool"
    ]


def test_karpenter_can_launch_a_node_for_every_gpu_pod(rendered):
    """With the groups at zero, each GPU pod is Pending until Karpenter launches a node
    for it: only labels known before the node exists may be required (not GFD's)."""
    pools = _nodepools()
    seen = 0
    for phase in (2, 3):
        for fname, doc in _docs(rendered[phase]).items():
            for g in _gpu_groups(doc):
                pod = g["template"]["spec"]
                why = {p["metadata"]["name"]: karpenter_problems(pod, p) for p in pools}
                assert any(not w for w in why.values()), (phase, fname, g["groupName"], why)
                required = {k for k, _, _ in _required_terms(pod)}
                assert not any(k.startswith("nvidia.com/") for k in required), required
                seen += 1
    assert seen == 5
    assert _yaml(VALUES)["gpu_provisioner"] == "karpenter"  # the default
    # The spot group lands on the spot pool only, the on-demand groups on the other.
    svc = yaml.safe_load(rendered[3]["rayservice.yaml"])
    groups = _groups(svc["spec"]["rayClusterConfig"])
    by_name = {p["metadata"]["name"]: p for p in pools}
    spot = groups["gpu-spot"]["template"]["spec"]
    assert not karpenter_problems(spot, by_name["aipp-gpu-spot"])
    assert karpenter_problems(spot, by_name["aipp-gpu-ondemand"])


def test_driver_floor_is_a_nodepool_promise_and_gfd_labels_only_a_preference(rendered):
    values = _yaml(VALUES)
    floor = values["gpu_driver"]["min_major"]
    for pool in _nodepools():
        promised = pool["spec"]["template"]["metadata"]["labels"]
        assert int(promised[values["gpu_driver"]["karpenter_label"]]) >= floor
    svc = yaml.safe_load(rendered[3]["rayservice.yaml"])
    pod = _groups(svc["spec"]["rayClusterConfig"])["gpu-ondemand"]["template"]["spec"]
    (preferred,) = pod["affinity"]["nodeAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    prefer = {e["key"]: e for e in preferred["preference"]["matchExpressions"]}
    assert prefer["nvidia.com/gpu.product"]["values"] == ["NVIDIA-L4"]
    gfd = values["gpu_driver"]["gfd_label"]
    assert gfd == "nvidia.com/cuda.driver-version.major"
    assert prefer[gfd] == {"key": gfd, "operator": "Gt", "values": [str(floor - 1)]}
    # The deprecated GFD label is gone everywhere.
    for files in rendered.values():
        assert all("nvidia.com/cuda.driver.major" not in text for text in files.values())
    assert pod["nodeSelector"]["karpenter.k8s.aws/instance-gpu-name"] == "l4"
    a100 = yaml.safe_load(r.render_manifests(3, {"gpu_type": "A100-80GB"})["rayservice.yaml"])
    a100_pod = _groups(a100["spec"]["rayClusterConfig"])["gpu-spot"]["template"]["spec"]
    assert a100_pod["nodeSelector"]["karpenter.k8s.aws/instance-gpu-memory"] == "81920"


def test_without_karpenter_gfd_labels_are_required():
    doc = yaml.safe_load(r.render_manifests(3, {"gpu_provisioner": "gfd"})["rayservice.yaml"])
    assert r.validate_manifest(doc) == []
    pod = _groups(doc["spec"]["rayClusterConfig"])["gpu-spot"]["template"]["spec"]
    terms = {k: (op, v) for k, op, v in _required_terms(pod)}
    assert terms["nvidia.com/gpu.product"] == ("In", ["NVIDIA-L4"])
    assert terms["nvidia.com/cuda.driver-version.major"] == ("Gt", ["579"])
    assert not any(k.startswith("karpenter.k8s.aws/") for k in terms)
    with pytest.raises(r.RenderError, match="karpenter_gpus"):
        r.render_manifests(3, {"gpu_types": {"B200": "NVIDIA-B200"}, "gpu_type": "B200"})
    gfd_only = {"gpu_types": {"B200": "NVIDIA-B200"}, "gpu_type": "B200", "gpu_provisioner": "gfd"}
    assert r.render_manifests(3, gfd_only)


def test_gpu_pods_keep_compiled_artifacts_on_a_shared_volume(rendered):
    """A replica start or a spot replacement reuses what an earlier start compiled."""
    cache = _yaml(VALUES)["compile_cache"]
    groups = [g for p in (2, 3) for d in _docs(rendered[p]).values() for g in _gpu_groups(d)]
    assert len(groups) == 5
    for g in groups:
        pod = g["template"]["spec"]
        (volume,) = [v for v in pod["volumes"] if "persistentVolumeClaim" in v]
        assert volume["persistentVolumeClaim"]["claimName"] == cache["claim_name"]
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
        assert mount["mountPath"] == cache["mount_path"]
        env = {e["name"]: e.get("value") for e in container["env"]}
        for var in ("VLLM_CACHE_ROOT", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR"):
            assert env[var].startswith(cache["mount_path"] + "/"), var
        assert pod["securityContext"]["fsGroup"] == 100  # writable by the image's ray user
    off = yaml.safe_load(
        r.render_manifests(2, {"compile_cache": {"claim_name": None}})["raycluster.yaml"]
    )
    pod = _groups(off["spec"])["gpu-ondemand"]["template"]["spec"]
    assert "volumes" not in pod and "VLLM_CACHE_ROOT" not in str(pod)


def test_images_pin_what_decides_reproducibility():
    """The model revision is a commit, CTranslate2 (which decides transcripts and cuBLAS)
    is pinned in the images and in what bench/gpu_smoke.py carries."""
    from importlib.metadata import version

    from bench.gpu_smoke import whisper_wheels

    text = DOCKERFILE.read_text()
    revision = re.search(r"^ARG GPU_LLM_REVISION=(\S+)$", text, re.M).group(1)
    assert re.fullmatch(r"[0-9a-f]{40}", revision), revision
    assert "grep -Eqx '[0-9a-f]{40}'" in text  # a branch name fails the build
    constraints = (ROOT / "cluster" / "constraints.txt").read_text()
    pins = dict(re.findall(r"^([\w-]+)==(\S+)$", constraints, re.M))
    assert pins["ctranslate2"] == version("ctranslate2")
    installs = re.findall(r"pip install --no-cache-dir -c cluster/constraints.txt", text)
    assert len(installs) == 2  # the cpu and the gpu target
    assert ("ctranslate2", pins["ctranslate2"]) in whisper_wheels()
