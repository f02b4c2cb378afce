"""KubeRay manifests (issue #6): CRD validity, Serve config, phase invariants, CLI, drift.

No Kubernetes cluster or Docker engine is available here: the manifests are checked
offline against the real KubeRay v1.7.0 CRD schemas (cluster/crds), as the API
server would, plus the checks the KubeRay operator makes before reconciling.
"""

from __future__ import annotations

import copy
import re
import shutil
from pathlib import Path

import pytest
import typer
import yaml
from typer.testing import CliRunner

from cluster import render as r
from cluster.cli import register

ROOT = Path(__file__).resolve().parent.parent
SERVE_CONFIG = ROOT / "serve_config.yaml"
SERVE_CONFIG_GPU = ROOT / "serve_config.gpu.yaml"
VALUES = ROOT / "cluster" / "values.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"

PLANNER_ADVICE = {
    "deployments": {
        "Transcriber": {"min_replicas": 1, "max_replicas": 3},
        "Summarizer": {"min_replicas": 1, "max_replicas": 2},
        "Ingress": {"min_replicas": 1, "max_replicas": 2},
    },
    "worker_groups": {
        "gpu-ondemand": {"min_replicas": 1, "max_replicas": 1},
        "gpu-spot": {"min_replicas": 0, "max_replicas": 3},
    },
    "gpu_type": "L4",
}


# --- helpers ------------------------------------------------------------------------


_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _yaml(path: Path):
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LOADER)


@pytest.fixture(scope="module")
def crds() -> dict[str, dict]:
    return {kind: _yaml(ROOT / "cluster" / "crds" / f) for kind, f in r.KIND_CRD_FILES.items()}


@pytest.fixture(scope="module")
def rendered() -> dict[int, dict[str, str]]:
    """A fresh default rendering of every phase: {phase: {file: text}}."""
    return {p: r.render_manifests(p) for p in r.PHASES}


def _docs(files: dict[str, str]) -> dict[str, dict]:
    return {
        name: yaml.safe_load(text) for name, text in files.items() if name != "serve_config.yaml"
    }


def _cluster_specs(doc: dict) -> list[dict]:
    if doc["kind"] == "RayCluster":
        return [doc["spec"]]
    if doc["kind"] == "RayService":
        return [doc["spec"]["rayClusterConfig"]]
    return [doc["spec"]["rayClusterSpec"]]


def _groups(spec: dict) -> dict[str, dict]:
    return {g["groupName"]: g for g in spec.get("workerGroupSpecs", [])}


def _containers(doc: dict) -> list[tuple[str, dict]]:
    out = []
    for spec in _cluster_specs(doc):
        for c in spec["headGroupSpec"]["template"]["spec"]["containers"]:
            out.append(("head", c))
        for name, g in _groups(spec).items():
            for c in g["template"]["spec"]["containers"]:
                out.append((name, c))
    if doc["kind"] == "RayJob":
        for c in doc["spec"]["submitterPodTemplate"]["spec"]["containers"]:
            out.append(("submitter", c))
    return out


def _serve_cfg(phase: int, files: dict[str, str]) -> dict:
    if phase == 3:
        return yaml.safe_load(yaml.safe_load(files["rayservice.yaml"])["spec"]["serveConfigV2"])
    return yaml.safe_load(files["serve_config.yaml"])


def _deployments(cfg: dict) -> dict[str, dict]:
    (app,) = cfg["applications"]
    return {d["name"]: d for d in app["deployments"]}


def _merge(base, over):
    """The documented merge rule, written again independently of cluster.render."""
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base[k], v) if k in base else v
        return out
    if (
        isinstance(base, list)
        and isinstance(over, list)
        and over
        and all(isinstance(i, dict) and "name" in i for i in base + over)
    ):
        out = list(base)
        names = [i["name"] for i in base]
        for item in over:
            assert item["name"] in names, f"override for unknown {item['name']}"
            idx = names.index(item["name"])
            out[idx] = _merge(out[idx], item)
        return out
    return over


def _expected_serve_cfg(phase: int) -> dict:
    cfg = _yaml(SERVE_CONFIG)
    if phase >= 2:
        cfg = _merge(cfg, _yaml(SERVE_CONFIG_GPU))
    cfg = _merge(cfg, {"http_options": {"host": "0.0.0.0"}})
    values = _yaml(VALUES)
    # Bound beyond loopback: API keys on. GPU phases: the baked model, hub off.
    env = {"AIPP_AUTH": "on"}
    if phase == 1:
        env["AIPP_LLM_ENGINE"] = values["llm_engine"]
    else:
        env["AIPP_LLM_MODEL"] = values["gpu_llm"]["model_dir"]
        env |= {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    cfg = _merge(cfg, {"applications": [{"name": "aipp", "runtime_env": {"env_vars": env}}]})
    return _merge(cfg, values["serve_overrides"][f"phase{phase}"] or {})


# --- CRD validation -----------------------------------------------------------------


def test_every_rendered_manifest_validates_against_the_kuberay_crds(rendered):
    kinds = {}
    for phase, files in rendered.items():
        for name, doc in _docs(files).items():
            assert doc["apiVersion"] == "ray.io/v1"
            assert r.validate_manifest(doc) == [], f"phase{phase}/{name}"
            kinds[(phase, name)] = doc["kind"]
    assert kinds == {
        (1, "raycluster.yaml"): "RayCluster",
        (2, "raycluster.yaml"): "RayCluster",
        (3, "rayservice.yaml"): "RayService",
        (3, "rayjob-batch.yaml"): "RayJob",
    }


def test_crds_are_kuberay_v1_7_0_with_a_v1_schema(crds):
    for kind, crd in crds.items():
        assert crd["spec"]["group"] == "ray.io"
        assert crd["spec"]["names"]["kind"] == kind
        v1 = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        assert v1 and v1[0]["storage"] and "openAPIV3Schema" in v1[0]["schema"]
    assert "v1.7.0" in (ROOT / "cluster" / "crds" / "SOURCE.md").read_text()


def test_every_cel_rule_in_the_crds_is_implemented(crds):
    """A CRD update that adds a CEL rule must not make the validator skip it."""
    rules = set()

    def walk(node):
        if isinstance(node, dict):
            rules.update(v["rule"] for v in node.get("x-kubernetes-validations", []))
            for v in node.values():
                walk(v)
        elif isinstance(node, list):
            for v in node:
                walk(v)

    walk(list(crds.values()))
    assert rules, "the CRDs carry CEL rules"
    assert rules <= set(r._CEL_RULES)


def _head_container(doc):
    return doc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]


def _set(path, value):
    def mutate(doc):
        node = doc
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return mutate


_RCC = ["spec", "rayClusterConfig"]
_HEAD_C = [*_RCC, "headGroupSpec", "template", "spec", "containers", 0]
_GROUP0 = [*_RCC, "workerGroupSpecs", 0]

BROKEN = {
    "quantity with a space": (_set([*_HEAD_C, "resources", "limits", "memory"], "2 GB"), "memory"),
    "quantity as float": (_set([*_HEAD_C, "resources", "limits", "cpu"], 1.5), "cpu"),
    "quantity as bool": (_set([*_HEAD_C, "resources", "limits", "cpu"], True), "cpu"),
    "int rayStartParam": (
        _set([*_RCC, "headGroupSpec", "rayStartParams", "num-cpus"], 0),
        "num-cpus",
    ),
    "misspelt field": (
        _set([*_RCC, "headGroupSpec", "template", "spec", "nodeSelecter"], {}),
        "nodeSelecter",
    ),
    "missing groupName": (
        lambda d: d["spec"]["rayClusterConfig"]["workerGroupSpecs"][0].pop("groupName"),
        "groupName",
    ),
    "int32 overflow": (_set([*_GROUP0, "maxReplicas"], 2**31), "int32"),
    "null without nullable": (_set([*_GROUP0, "minReplicas"], None), "minReplicas"),
    "wrong apiVersion": (_set(["apiVersion"], "ray.io/v1alpha1"), "apiVersion"),
    "wrong kind": (_set(["kind"], "RayCluster"), "RayCluster"),
    "status in a manifest": (_set(["status"], {}), "status"),
    "bad name": (_set(["metadata", "name"], "AIPP_svc"), "name"),
    "duplicate list-map key": (
        lambda d: _head_container(d)["ports"].append({"containerPort": 8000, "name": "x"}),
        "duplicate",
    ),
    "managedBy CEL rule": (_set(["spec", "managedBy"], "someone"), "managedBy"),
    "bad upgrade type": (_set(["spec", "upgradeStrategy", "type"], "Rolling"), "Rolling"),
    "min above max": (_set([*_GROUP0, "minReplicas"], 99), "minReplicas"),
    "incremental without options": (
        _set(["spec", "upgradeStrategy", "type"], "NewClusterWithIncrementalUpgrade"),
        "clusterUpgradeOptions",
    ),
    "resources twice": (_set([*_RCC, "headGroupSpec", "resources"], {"CPU": "0"}), "resources"),
    "bad group label": (_set([*_GROUP0, "labels"], {"ray.io/market-type": "on demand"}), "label"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_validator_rejects_broken_manifests(rendered, case):
    mutate, needle = BROKEN[case]
    doc = copy.deepcopy(yaml.safe_load(rendered[3]["rayservice.yaml"]))
    assert r.validate_manifest(doc) == []
    mutate(doc)
    problems = r.validate_manifest(doc)
    assert problems, case
    assert any(needle in p for p in problems), problems


@pytest.mark.parametrize("quantity", ["2Gi", "500m", "1", 2, "1.5", "1e3"])
def test_int_or_string_accepts_kubernetes_quantities(rendered, quantity):
    doc = yaml.safe_load(rendered[3]["rayservice.yaml"])
    _head_container(doc)["resources"]["limits"]["memory"] = quantity
    assert r.validate_manifest(doc) == []


def test_validator_checks_rayjob_rules(rendered):
    doc = yaml.safe_load(rendered[3]["rayjob-batch.yaml"])
    assert r.validate_manifest(doc) == []
    doc["spec"]["shutdownAfterJobFinishes"] = False
    assert any("ttlSecondsAfterFinished" in p for p in r.validate_manifest(doc))
    doc = yaml.safe_load(rendered[3]["rayjob-batch.yaml"])
    doc["spec"]["runtimeEnvYAML"] = "- not a mapping"
    assert any("runtimeEnvYAML" in p for p in r.validate_manifest(doc))


# --- Serve config -------------------------------------------------------------------


@pytest.mark.parametrize("phase", r.PHASES)
def test_serve_config_parses_and_equals_sources_plus_phase_overrides(rendered, phase):
    from ray.serve.schema import ServeDeploySchema

    cfg = _serve_cfg(phase, rendered[phase])
    ServeDeploySchema.model_validate(cfg)
    expected = _expected_serve_cfg(phase)
    assert _deployments(cfg) == _deployments(expected)
    assert cfg == expected
    base = _yaml(SERVE_CONFIG)
    assert cfg["applications"][0]["import_path"] == base["applications"][0]["import_path"]
    assert cfg["http_options"]["host"] == "0.0.0.0"


def test_phase_overrides_do_what_they_say(rendered):
    deps = {p: _deployments(_serve_cfg(p, rendered[p])) for p in r.PHASES}
    for name in ("Transcriber", "Summarizer"):
        assert "num_gpus" not in deps[1][name]["ray_actor_options"]
        assert deps[2][name]["ray_actor_options"]["num_gpus"] == 0.5
        rao = deps[3][name]["ray_actor_options"]
        assert rao["num_gpus"] == 0.5
        assert rao["label_selector"] == {"ray.io/market-type": "spot"}
        assert rao["fallback_strategy"] == [{"label_selector": {"ray.io/market-type": "on-demand"}}]
    assert deps[3]["Ingress"]["ray_actor_options"]["label_selector"] == {"ray.io/node-group": "cpu"}
    env = {p: _serve_cfg(p, rendered[p])["applications"][0]["runtime_env"] for p in r.PHASES}
    assert env[1]["env_vars"]["AIPP_LLM_ENGINE"] == "llama_cpp"
    assert env[2]["env_vars"]["AIPP_LLM_ENGINE"] == "vllm"
    assert env[3]["env_vars"]["AIPP_LLM_ENGINE"] == "vllm"


def test_serve_autoscaling_on_ongoing_requests_in_phase3(rendered):
    for name, dep in _deployments(_serve_cfg(3, rendered[3])).items():
        auto = dep["autoscaling_config"]
        assert auto["target_ongoing_requests"] > 0, name
        assert 0 <= auto["min_replicas"] <= auto["max_replicas"], name
        if auto["min_replicas"] == 0:  # idle scale-to-zero: starts warm, waits minutes
            assert auto["initial_replicas"] >= 1, name
            assert auto["downscale_to_zero_delay_s"] >= 60, name
    # GPU replicas stay warm: a vLLM replica takes minutes to come back.
    gpu = _deployments(_serve_cfg(3, rendered[3]))
    assert gpu["Transcriber"]["autoscaling_config"]["min_replicas"] >= 1
    assert gpu["Summarizer"]["autoscaling_config"]["min_replicas"] >= 1


def test_unknown_serve_keys_are_refused():
    cfg = r.load_serve_config(2)
    cfg["applications"][0]["deployments"][0]["max_ongoing_request"] = 3
    cfg["applications"][0]["deployments"][1]["ray_actor_options"]["num_gpu"] = 1
    problems = r.check_serve_config(cfg)
    assert any("max_ongoing_request" in p for p in problems)
    assert any("num_gpu" in p for p in problems)


# --- merge rule ---------------------------------------------------------------------


def test_merge_by_name_recursive_and_pure():
    base = {"a": {"x": 1, "y": [1, 2]}, "apps": [{"name": "n", "d": {"k": 1, "j": 2}}]}
    before = copy.deepcopy(base)
    merged = r.merge_serve_config(base, {"a": {"y": [3]}, "apps": [{"name": "n", "d": {"k": 9}}]})
    assert merged == {"a": {"x": 1, "y": [3]}, "apps": [{"name": "n", "d": {"k": 9, "j": 2}}]}
    assert base == before
    with pytest.raises(r.RenderError, match="Transcribr"):
        r.merge_serve_config(
            r.load_serve_config(1),
            {"applications": [{"name": "aipp", "deployments": [{"name": "Transcribr"}]}]},
        )


def test_load_serve_config_gpu_is_what_phase2_uses():
    cpu, gpu = r.load_serve_config(1), r.load_serve_config(gpu=True)
    assert r.load_serve_config(2) == gpu
    assert cpu == _yaml(SERVE_CONFIG)
    assert r.gpu_fraction_per_node(cpu) == 0
    assert r.gpu_fraction_per_node(gpu) == 1.0


# --- phase invariants -----------------------------------------------------------------


def test_no_latest_tag_anywhere(rendered):
    texts = [t for files in rendered.values() for t in files.values()]
    texts += [DOCKERFILE.read_text(), VALUES.read_text()]
    for text in texts:
        assert not re.search(r":latest\b", text)
    for files in rendered.values():
        for doc in _docs(files).values():
            for _, c in _containers(doc):
                assert re.search(r":[\w.-]+$|@sha256:", c["image"]), c["image"]
    with pytest.raises(r.RenderError, match="latest"):
        r.render_manifests(1, {"images": {"cpu": "example.com/aipp:latest"}})
    with pytest.raises(r.RenderError, match="no tag"):
        r.render_manifests(1, {"images": {"cpu": "example.com/aipp"}})


def test_every_container_has_requests_and_limits(rendered):
    count = 0
    for files in rendered.values():
        for doc in _docs(files).values():
            for group, c in _containers(doc):
                res = c["resources"]
                for key in ("cpu", "memory"):
                    assert key in res["requests"] and key in res["limits"], (group, c["name"])
                if "nvidia.com/gpu" in res["limits"]:
                    assert res["requests"]["nvidia.com/gpu"] == res["limits"]["nvidia.com/gpu"]
                count += 1
            for spec in _cluster_specs(doc):
                if spec.get("enableInTreeAutoscaling"):
                    res = spec["autoscalerOptions"]["resources"]
                    assert res["requests"] and res["limits"]
    assert count >= 10


def test_gpu_groups_request_gpus_and_spot_groups_select_spot(rendered):
    seen = set()
    for phase in (2, 3):
        for doc in _docs(rendered[phase]).values():
            for spec in _cluster_specs(doc):
                for name, g in _groups(spec).items():
                    pod = g["template"]["spec"]
                    limits = pod["containers"][0]["resources"]["limits"]
                    selector = pod.get("nodeSelector", {})
                    tolerations = pod.get("tolerations", [])
                    if name.startswith("gpu-"):
                        seen.add(name)
                        assert int(limits["nvidia.com/gpu"]) >= 1
                        # The GPU model as Karpenter's instance label (issue 28).
                        assert selector.get("karpenter.k8s.aws/instance-gpu-name") == "l4"
                        assert any(t["key"] == "nvidia.com/gpu" for t in tolerations)
                    else:
                        assert "nvidia.com/gpu" not in limits
                    spotty = "spot" in " ".join(f"{k}={v}" for k, v in selector.items())
                    spot_tol = any(
                        "spot" in f"{t['key']}={t.get('value', '')}" for t in tolerations
                    )
                    if name == "gpu-spot":
                        assert spotty and spot_tol
                        assert g["labels"]["ray.io/market-type"] == "spot"
                    else:
                        assert not spotty and not spot_tol
                        assert g["labels"]["ray.io/market-type"] == "on-demand"
    assert seen == {"gpu-ondemand", "gpu-spot"}


def test_phase_shapes(rendered):
    p1 = yaml.safe_load(rendered[1]["raycluster.yaml"])
    assert "workerGroupSpecs" not in p1["spec"]
    assert "nvidia.com/gpu" not in str(p1)
    head1 = p1["spec"]["headGroupSpec"]["template"]["spec"]
    assert head1["volumes"][0]["persistentVolumeClaim"]["claimName"] == "aipp-data"
    env1 = {e["name"] for e in head1["containers"][0]["env"]}
    assert "AIPP_DATA_DIR" in env1 and "AIPP_DATABASE_URL" not in env1  # SQLite

    p2 = yaml.safe_load(rendered[2]["raycluster.yaml"])
    assert list(_groups(p2["spec"])) == ["gpu-ondemand"]
    assert p2["spec"]["enableInTreeAutoscaling"] is True

    svc = yaml.safe_load(rendered[3]["rayservice.yaml"])
    rcc = svc["spec"]["rayClusterConfig"]
    assert list(_groups(rcc)) == ["cpu", "gpu-ondemand", "gpu-spot"]
    assert rcc["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert rcc["enableInTreeAutoscaling"] is True
    assert rcc["autoscalerOptions"]["version"] == "v2"
    groups = _groups(rcc)
    assert groups["gpu-ondemand"]["minReplicas"] >= 1  # the on-demand floor
    assert groups["gpu-spot"]["priority"] > groups["gpu-ondemand"].get("priority", 0)
    ft = rcc["gcsFaultToleranceOptions"]
    assert ft["redisAddress"] and ft["redisPassword"]["valueFrom"]["secretKeyRef"]["name"]
    assert svc["spec"]["upgradeStrategy"] == {"type": "NewCluster"}

    job = yaml.safe_load(rendered[3]["rayjob-batch.yaml"])
    assert job["spec"]["entrypoint"].startswith(
        "python -m pipelines.batch_summarize --input s3://aipp-batch/input/ --output "
    )
    assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    assert yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]["AIPP_LLM_ENGINE"] == "vllm"


def test_secrets_are_references_never_values(rendered):
    for files in rendered.values():
        for doc in _docs(files).values():
            for _, c in _containers(doc):
                for env in c.get("env", []):
                    if env["name"] in (
                        "AIPP_DATABASE_URL",
                        "AIPP_REDIS_URL",
                        "AIPP_OPENAI_API_KEY",
                    ):
                        assert "value" not in env
                        assert env["valueFrom"]["secretKeyRef"]["key"]
    p1 = yaml.safe_load(r.render_manifests(1, {"llm_engine": "openai"})["raycluster.yaml"])
    env = {
        e["name"]: e
        for e in p1["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["AIPP_OPENAI_API_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "aipp-llm"


@pytest.mark.parametrize("phase", (2, 3))
def test_gpu_fractions_fit_a_node(rendered, phase):
    values = _yaml(VALUES)
    cfg = _serve_cfg(phase, rendered[phase])
    per_replica = [d["ray_actor_options"].get("num_gpus", 0) for d in _deployments(cfg).values()]
    assert sum(per_replica) <= min(
        values["worker_groups"][g]["gpus"] for g in ("gpu-ondemand", "gpu-spot")
    )
    gpus = {n: d["ray_actor_options"].get("num_gpus", 0) for n, d in _deployments(cfg).items()}
    # Deployments come from serve_config.yaml generically (Ingress, TaskRunner, Diarizer,
    # ...); only the two model deployments take a GPU share.
    assert {n: g for n, g in gpus.items() if g} == {"Transcriber": 0.5, "Summarizer": 0.5}


def test_gpu_fractions_that_do_not_fit_are_refused():
    greedy = {
        "serve_overrides": {
            "phase2": {
                "applications": [
                    {
                        "name": "aipp",
                        "deployments": [
                            {"name": "Transcriber", "ray_actor_options": {"num_gpus": 1}}
                        ],
                    }
                ]
            }
        }
    }
    with pytest.raises(r.RenderError, match="does not fit"):
        r.render_manifests(2, greedy)
    with pytest.raises(r.RenderError, match="phase 1 has no GPU"):
        r.render_manifests(
            1,
            {
                "serve_overrides": greedy["serve_overrides"]
                | {"phase1": greedy["serve_overrides"]["phase2"]}
            },
        )


def test_incremental_upgrade_renders_valid_cluster_upgrade_options():
    files = r.render_manifests(3, {"upgrade": {"strategy": "NewClusterWithIncrementalUpgrade"}})
    svc = yaml.safe_load(files["rayservice.yaml"])
    strategy = svc["spec"]["upgradeStrategy"]
    assert strategy["type"] == "NewClusterWithIncrementalUpgrade"
    assert strategy["clusterUpgradeOptions"]["gatewayClassName"] == "istio"
    assert r.validate_manifest(svc) == []
    with pytest.raises(r.RenderError, match="step_size_percent"):
        r.render_manifests(
            3,
            {
                "upgrade": {
                    "strategy": "NewClusterWithIncrementalUpgrade",
                    "incremental": {"step_size_percent": 60, "max_surge_percent": 50},
                }
            },
        )


# --- planner values -------------------------------------------------------------------


def test_planner_advice_changes_the_replica_bounds(tmp_path):
    advice = tmp_path / "serve-overrides.yaml"
    advice.write_text(yaml.safe_dump(PLANNER_ADVICE))
    default = yaml.safe_load(r.render_manifests(3)["rayservice.yaml"])
    planned = yaml.safe_load(
        r.render_manifests(3, r.read_values_file(advice), values_name=advice.name)[
            "rayservice.yaml"
        ]
    )
    default_deps = _deployments(yaml.safe_load(default["spec"]["serveConfigV2"]))
    deps = _deployments(yaml.safe_load(planned["spec"]["serveConfigV2"]))
    assert default_deps["Transcriber"]["autoscaling_config"]["max_replicas"] != 3
    for name, bounds in PLANNER_ADVICE["deployments"].items():
        auto = deps[name]["autoscaling_config"]
        assert (auto["min_replicas"], auto["max_replicas"]) == (
            bounds["min_replicas"],
            bounds["max_replicas"],
        )
        # everything else is still serve_config.yaml's
        assert (
            auto["target_ongoing_requests"]
            == (default_deps[name]["autoscaling_config"]["target_ongoing_requests"])
        )
    groups = _groups(planned["spec"]["rayClusterConfig"])
    assert (groups["gpu-ondemand"]["minReplicas"], groups["gpu-ondemand"]["maxReplicas"]) == (1, 1)
    assert (groups["gpu-spot"]["minReplicas"], groups["gpu-spot"]["maxReplicas"]) == (0, 3)
    assert _groups(default["spec"]["rayClusterConfig"])["gpu-spot"]["maxReplicas"] != 3
    assert r.validate_manifest(planned) == []
    # phase 2 takes the same advice (it has the on-demand group only)
    p2 = yaml.safe_load(r.render_manifests(2, PLANNER_ADVICE)["raycluster.yaml"])
    assert _groups(p2["spec"])["gpu-ondemand"]["maxReplicas"] == 1


def test_planner_advice_with_an_unknown_deployment_is_refused():
    with pytest.raises(r.RenderError, match="Transcribr"):
        r.render_manifests(3, {"deployments": {"Transcribr": {"max_replicas": 2}}})
    with pytest.raises(r.RenderError, match="max_replicas"):
        r.render_manifests(
            3, {"deployments": {"Transcriber": {"min_replicas": 0, "max_replicas": 0}}}
        )
    with pytest.raises(r.RenderError, match="min_replicas 3 > max_replicas 1"):
        r.render_manifests(
            3, {"deployments": {"Transcriber": {"min_replicas": 3, "max_replicas": 1}}}
        )


# --- CLI ------------------------------------------------------------------------------


def _squash(text: str) -> str:
    """Output without whitespace or rich's box drawing (it wraps long messages)."""
    return re.sub(r"[\s│╭╮╰╯─]+", "", text)


@pytest.fixture()
def cli() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _main() -> None:
        """aipp"""

    register(root)
    return root


def test_cli_render_writes_files(cli, tmp_path):
    advice = tmp_path / "advice.yaml"
    advice.write_text(yaml.safe_dump(PLANNER_ADVICE))
    out = tmp_path / "out"
    result = CliRunner().invoke(
        cli, ["cluster", "render", "--phase", "3", "--values", str(advice), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["rayjob-batch.yaml", "rayservice.yaml"]
    svc = next(r.iter_manifests(out / "rayservice.yaml"))
    assert _groups(svc["spec"]["rayClusterConfig"])["gpu-spot"]["maxReplicas"] == 3
    result = CliRunner().invoke(cli, ["cluster", "render", "--phase", "1", "--out", str(out)])
    assert result.exit_code == 0, result.output
    # the phase-3 files were generated, so a phase-1 rendering into the same dir replaces them
    assert sorted(p.name for p in out.iterdir()) == ["raycluster.yaml", "serve_config.yaml"]


@pytest.mark.parametrize(
    "args, content, needle",
    [
        (["--phase", "4"], None, "not a phase"),
        (["--phase", "two"], None, "not a phase"),
        (["--phase", "1", "--values", "{values}"], "a: [1, 2\n", "not valid YAML"),
        (["--phase", "1", "--values", "{values}"], "- just\n- a list\n", "must hold a mapping"),
        (
            ["--phase", "3", "--values", "{values}"],
            "worker_groups: {gpu-spot: {max_replicas: -1}}\n",
            "max_replicas",
        ),
        (["--phase", "3", "--values", "{values}"], "gpu_typ: L4\n", "gpu_typ"),
        (["--phase", "3", "--values", "{values}"], "gpu_type: Z9\n", "Z9"),
        (
            ["--phase", "3", "--values", "{values}"],
            "deployments: {Nope: {max_replicas: 1}}\n",
            "Nope",
        ),
        (["--phase", "1", "--values", "{missing}"], None, "missing.yaml"),
    ],
)
def test_cli_bad_input_exits_2_without_traceback(cli, tmp_path, args, content, needle):
    values = tmp_path / "values.yaml"
    if content is not None:
        values.write_text(content)
    args = [a.format(values=values, missing=tmp_path / "missing.yaml") for a in args]
    result = CliRunner().invoke(cli, ["cluster", "render", *args, "--out", str(tmp_path / "o")])
    assert result.exit_code == 2, result.output
    assert _squash(needle) in _squash(result.output), result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit)
    assert not (tmp_path / "o").exists()


def test_cli_check_detects_drift(cli, tmp_path):
    out = tmp_path / "rendered"
    shutil.copytree(r.RENDERED_DIR, out)
    ok = CliRunner().invoke(
        cli, ["cluster", "render", "--phase", "all", "--check", "--out", str(out)]
    )
    assert ok.exit_code == 0, ok.output
    path = out / "phase3" / "rayservice.yaml"
    path.write_text(path.read_text().replace("maxReplicas: 4", "maxReplicas: 5", 1))
    bad = CliRunner().invoke(
        cli, ["cluster", "render", "--phase", "all", "--check", "--out", str(out)]
    )
    assert bad.exit_code == 1
    assert "rayservice.yaml" in bad.output


# --- drift, images ----------------------------------------------------------------------


def test_committed_rendering_has_no_drift():
    assert r.RENDERED_DIR.is_dir(), "run: aipp cluster render --phase all --out cluster/rendered"
    assert r.check_rendered() == []


def test_dockerfile_builds_on_the_pinned_ray_image():
    text = DOCKERFILE.read_text()
    pin = re.search(r'"ray\[serve,data\]>=(\d+\.\d+),<', (ROOT / "pyproject.toml").read_text())
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)$", text, re.M).group(1)
    assert ray_version.startswith(pin.group(1) + ".")
    assert ray_version == _yaml(VALUES)["ray_version"]
    froms = re.findall(r"^FROM (\S+)(?: AS (\w+))?$", text, re.M)
    assert {stage for _, stage in froms} >= {"cpu", "gpu"}
    for image, _ in froms:
        assert image.startswith("rayproject/ray:${RAY_VERSION}-${PYTHON_TAG}-"), image
    assert re.search(r'pip install .*"\.\[gpu\]"', text)
    assert "vllm==0.29.0" in (ROOT / "pyproject.toml").read_text()  # = ray[llm]==2.60.0
    ignore = (ROOT / ".dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


# --- Authentication, offline models, driver floor, batch head (issues 12 and 15) ------


def test_every_phase_renders_ray_token_auth(rendered):
    """Dashboard/jobs (8265), client (10001) and GCS (6379) need the token in every phase."""
    secret = _yaml(VALUES)["ray_auth"]["secret_name"]
    seen = 0
    for phase in r.PHASES:
        for fname, doc in _docs(rendered[phase]).items():
            for spec in _cluster_specs(doc):
                assert spec.get("authOptions") == {"mode": "token", "secretName": secret}, fname
                seen += 1
            if doc["kind"] == "RayJob":
                (sub,) = doc["spec"]["submitterPodTemplate"]["spec"]["containers"]
                env = {e["name"]: e for e in sub["env"]}
                assert env["RAY_AUTH_MODE"]["value"] == "token"
                ref = env["RAY_AUTH_TOKEN"]["valueFrom"]["secretKeyRef"]
                assert ref == {"name": secret, "key": "auth_token"}
    assert seen == 4  # phase 1, phase 2, the RayService and the RayJob's cluster


def test_validator_refuses_token_auth_on_a_ray_without_it(rendered):
    doc = yaml.safe_load(rendered[1]["raycluster.yaml"])
    doc["spec"]["rayVersion"] = "2.51.0"
    assert any("rayVersion >= 2.52.0" in p for p in r.validate_manifest(doc))


@pytest.mark.parametrize("phase", r.PHASES)
def test_api_keys_on_wherever_serve_binds_beyond_loopback(rendered, phase):
    cfg = _serve_cfg(phase, rendered[phase])
    assert not r.loopback_only(cfg["http_options"]["host"])
    assert cfg["applications"][0]["runtime_env"]["env_vars"]["AIPP_AUTH"] == "on"


def test_a_non_loopback_serve_config_without_api_keys_is_refused():
    from cluster.render.serve_config import require_auth_beyond_loopback

    cfg = r.load_serve_config(1)
    assert r.loopback_only(cfg["http_options"]["host"])  # local default: 127.0.0.1
    assert require_auth_beyond_loopback(cfg) == []
    cfg["http_options"]["host"] = "0.0.0.0"
    assert require_auth_beyond_loopback(cfg)
    for host in ("127.0.0.1", "::1", "localhost"):
        assert r.loopback_only(host)
    for host in ("0.0.0.0", "::", "10.0.0.5", "aipp.example.com"):
        assert not r.loopback_only(host)


def _gpu_groups(doc: dict) -> list[dict]:
    return [
        g for spec in _cluster_specs(doc) for g in _groups(spec).values() if "gpu" in g["groupName"]
    ]


def test_gpu_pods_require_the_driver_floor_and_run_offline(rendered):
    values = _yaml(VALUES)
    floor = values["gpu_driver"]["min_major"]
    groups = [g for p in (2, 3) for d in _docs(rendered[p]).values() for g in _gpu_groups(d)]
    assert len(groups) == 5  # phase 2: 1; RayService: 2; RayJob: 2
    for g in groups:
        spec = g["template"]["spec"]
        terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
        (expr,) = terms["nodeSelectorTerms"][0]["matchExpressions"]
        assert expr["key"] == values["gpu_driver"]["karpenter_label"]
        assert expr["operator"] == "Gt" and int(expr["values"][0]) + 1 == floor
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"


def test_gpu_model_is_the_directory_baked_into_the_gpu_image(rendered):
    model_dir = _yaml(VALUES)["gpu_llm"]["model_dir"]
    baked = re.findall(r"^ARG GPU_LLM_DIR=(\S+)$", DOCKERFILE.read_text(), re.M)
    assert baked and set(baked) == {model_dir}
    for phase in (2, 3):
        env = _serve_cfg(phase, rendered[phase])["applications"][0]["runtime_env"]["env_vars"]
        assert env["AIPP_LLM_MODEL"] == model_dir and env["HF_HUB_OFFLINE"] == "1"
    job = yaml.safe_load(rendered[3]["rayjob-batch.yaml"])
    job_env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    assert job_env["AIPP_LLM_MODEL"] == model_dir and job_env["HF_HUB_OFFLINE"] == "1"


def test_batch_job_head_can_build_the_vllm_processor(rendered):
    """The entrypoint runs on the head and builds the vLLM processor (transformers)."""
    values = _yaml(VALUES)
    job = yaml.safe_load(rendered[3]["rayjob-batch.yaml"])
    (head,) = job["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"]
    assert head["image"] == values["images"]["gpu"]
    assert "HF_HUB_OFFLINE" in {e["name"] for e in head["env"]}
    assert "vllm" in re.search(r"^gpu = \[(.*)\]$", (ROOT / "pyproject.toml").read_text(), re.M)[1]
    # The RayService head only runs GCS, the dashboard and the controller: CPU image.
    svc = yaml.safe_load(rendered[3]["rayservice.yaml"])
    svc_head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]
    assert svc_head["containers"][0]["image"] == values["images"]["cpu"]


def test_batch_job_declares_its_gpus(rendered):
    job = yaml.safe_load(rendered[3]["rayjob-batch.yaml"])
    args = job["spec"]["entrypoint"].split()
    assert args[args.index("--device") + 1] == "gpu"
    assert int(args[args.index("--gpus") + 1]) == _yaml(VALUES)["batch"]["gpus"]
