"""The GPU path on CPU: each test fails against the code before issue 15's fixes.

No GPU and no vLLM here, so the one stand-in is at the vLLM boundary: a module
installed as ``vllm`` (``StandInVLLM``) with the few names we call, behaving as the
real ones do where it matters (request ids, cumulative outputs, the offline run
loop that collects every finished request). Everything else is ours or Ray's, real.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from dataclasses import dataclass, field

import pytest

from app.core.model_assets import ResolvedModel
from pipelines.batch_summarize import BatchError, BatchOptions, make_plan

# --- the stand-in at the vLLM boundary ------------------------------------------------


class _Tokenizer:
    def apply_chat_template(self, messages, tokenize=False, add_generation_prompt=True):
        return "|".join(m["content"] for m in messages)

    def encode(self, text, add_special_tokens=False):
        return [ord(c) for c in text]


@dataclass
class _Gen:
    text: str
    token_ids: list
    finish_reason: str | None = None


@dataclass
class _Out:
    request_id: str
    prompt_token_ids: list
    outputs: list = field(default_factory=list)
    finished: bool = False


def _answer(prompt_ids: list[int]) -> str:
    return "answer to " + "".join(chr(i) for i in prompt_ids).split("|")[-1]


class StandInAsyncLLM:
    """``AsyncLLM``: outputs are routed by request id and cumulative, several steps each."""

    in_flight = 0
    most_in_flight = 0

    @classmethod
    def from_engine_args(cls, args):
        cls.args = args
        return cls()

    def get_tokenizer(self):
        return _Tokenizer()

    async def generate(self, prompt, sampling_params, request_id):
        cls = type(self)
        cls.in_flight += 1
        cls.most_in_flight = max(cls.most_in_flight, cls.in_flight)
        try:
            ids = prompt["prompt_token_ids"]
            text = _answer(ids)
            for end in range(4, len(text) + 4, 4):  # a few engine steps
                await asyncio.sleep(0.01)
                done = end >= len(text)
                yield _Out(
                    request_id,
                    ids,
                    [_Gen(text[:end], list(range(min(end, len(text)))), "stop" if done else None)],
                    done,
                )
        finally:
            cls.in_flight -= 1


class StandInLLM:
    """The offline ``vllm.LLM``: ``chat`` adds its requests, then steps the one shared
    engine until *no* request is unfinished and returns every finished output, sorted
    by request id, whichever thread added it (vLLM's ``LLM._run_engine``)."""

    def __init__(self, **kwargs):
        self._pending: list[tuple[int, list]] = []
        self._counter = 0
        self._lock = threading.Lock()

    def get_tokenizer(self):
        return _Tokenizer()

    def chat(self, conversations, params, use_tqdm=False):
        tok = _Tokenizer()
        with self._lock:
            for messages in conversations:
                ids = tok.encode(tok.apply_chat_template(messages))
                self._pending.append((self._counter, ids))
                self._counter += 1
        time.sleep(0.05)  # engine steps: another thread adds its request meanwhile
        with self._lock:
            finished, self._pending = self._pending, []
        return [
            _Out(str(rid), ids, [_Gen(_answer(ids), [1, 2], "stop")], True)
            for rid, ids in sorted(finished)
        ]


@pytest.fixture()
def stand_in_vllm(monkeypatch):
    mod = types.ModuleType("vllm")
    mod.AsyncLLMEngine = StandInAsyncLLM
    mod.AsyncEngineArgs = lambda **kw: types.SimpleNamespace(**kw)
    mod.LLM = StandInLLM
    mod.SamplingParams = lambda **kw: types.SimpleNamespace(**kw)
    sp = types.ModuleType("vllm.sampling_params")
    sp.StructuredOutputsParams = lambda **kw: types.SimpleNamespace(**kw)
    mod.sampling_params = sp
    monkeypatch.setitem(sys.modules, "vllm", mod)
    monkeypatch.setitem(sys.modules, "vllm.sampling_params", sp)
    StandInAsyncLLM.in_flight = StandInAsyncLLM.most_in_flight = 0
    return mod


# --- bug 1: one engine, two threads ---------------------------------------------------


def _two_threads(engine) -> dict[str, str]:
    results: dict[str, str] = {}
    errors: list[BaseException] = []

    def call(who: str) -> None:
        try:
            out = engine.generate(
                [{"role": "user", "content": who}], max_tokens=16, temperature=0.0
            )
            results[who] = out.text
        except BaseException as exc:  # IndexError from a stolen output, for one
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(w,)) for w in ("alpha", "bravo")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors, errors
    return results


def test_vllm_engine_gives_each_concurrent_caller_its_own_answer(stand_in_vllm):
    from app.llm.engines import VLLMEngine

    engine = VLLMEngine(ResolvedModel("m", "/models/m", True), 4096, 0.45, enforce_eager=True)
    assert StandInAsyncLLM.args.enforce_eager is True
    assert StandInAsyncLLM.args.max_model_len == 4096
    results = _two_threads(engine)
    assert results == {"alpha": "answer to alpha", "bravo": "answer to bravo"}
    assert StandInAsyncLLM.most_in_flight == 2  # both requests ran in the engine together


def test_vllm_engine_streams_tokens_as_they_come(stand_in_vllm):
    from app.llm.engines import VLLMEngine

    engine = VLLMEngine(ResolvedModel("m", "/models/m", True), 4096, 0.45)
    deltas = list(
        engine.stream([{"role": "user", "content": "hello"}], max_tokens=8, temperature=0)
    )
    assert len(deltas) > 1  # real streaming, not the whole answer as one chunk
    assert "".join(deltas) == "answer to hello"


def test_vllm_engine_async_methods(stand_in_vllm):
    from app.llm.engines import VLLMEngine

    engine = VLLMEngine(ResolvedModel("m", "/models/m", True), 4096, 0.45)

    async def both():
        msgs = [[{"role": "user", "content": w}] for w in ("x", "y")]
        return await asyncio.gather(
            *(
                asyncio.wrap_future(
                    asyncio.run_coroutine_threadsafe(
                        engine.agenerate(m, max_tokens=4, temperature=0), engine._loop
                    )
                )
                for m in msgs
            )
        )

    a, b = asyncio.run(both())
    assert (a.text, b.text) == ("answer to x", "answer to y")
    assert a.prompt_tokens == len("x") and a.finish_reason == "stop"


# --- bug 2: failed inferences through Ray's real processor stage wrappers -------------


def test_failed_vllm_rows_become_failed_rows_through_rays_stage_wrappers(ray_on_session_cluster):
    ray = ray_on_session_cluster
    from ray.llm._internal.batch.processor.base import OfflineProcessorConfig, Processor
    from ray.llm._internal.batch.stages.base import StatefulStage, StatefulStageUDF

    from app.core.settings import Settings
    from pipelines.results import RESULT_COLUMNS, normalize
    from pipelines.summarize_vllm import make_postprocess, make_preprocess, run_processor

    class StandInVLLMEngineStageUDF(StatefulStageUDF):
        """vLLMEngineStageUDF's per-row contract with should_continue_on_error: an
        exception becomes an output row with ``__inference_error__`` set."""

        async def udf(self, rows):
            for row in rows:
                idx = row[self.IDX_IN_BATCH_COLUMN]
                if "BAD" in row["messages"][-1]["content"]:
                    yield {
                        "prompt": "",
                        "generated_text": "",
                        "num_generated_tokens": 0,
                        "time_taken_llm": -1,
                        self.IDX_IN_BATCH_COLUMN: idx,
                        "__inference_error__": "ValueError: prompt too long",
                    }
                else:
                    yield {
                        "generated_text": '{"summary": "fine", "key_points": ["k"], '
                        '"action_items": []}',
                        "num_generated_tokens": 9,
                        "time_taken_llm": 0.5,
                        self.IDX_IN_BATCH_COLUMN: idx,
                        "__inference_error__": "",
                    }

    class StandInVLLMEngineStage(StatefulStage):
        fn: type = StandInVLLMEngineStageUDF

    settings = Settings()
    config = OfflineProcessorConfig(
        model_source="/models/m", batch_size=4, should_continue_on_error=True
    )
    processor = Processor(
        config,
        [StandInVLLMEngineStage(map_batches_kwargs={"concurrency": 1})],
        preprocess=make_preprocess(settings),
        postprocess=make_postprocess("m"),
    )

    def row(path: str, text: str) -> dict:
        out = {k: None for k in RESULT_COLUMNS}
        out.update(path=path, transcript_text=text, models={"stt": "w", "llm": None})
        out.update(timings={"transcribe_s": 1.0})
        return out

    ds = ray.data.from_items([row("good.wav", "all good"), row("bad.wav", "BAD input")])
    rows = {r["path"]: r for r in run_processor(processor, ds, "m").take_all()}
    bad, good = rows["bad.wav"], rows["good.wav"]
    assert bad["error_code"] == "summarize_failed"
    assert "prompt too long" in bad["error_message"]
    assert not bad.get("summary")
    assert good["summary"] == "fine" and good["key_points"] == ["k"]
    assert not good.get("error_code")
    # What the result writer records (pipelines.results.normalize): before the fix the
    # failed row arrived without error_code and was written as "succeeded".
    assert normalize(bad)["status"] == "failed"
    assert normalize(good)["status"] == "succeeded"
    for r in (good, bad):  # no processor internals survive with a value
        extra = {k: v for k, v in r.items() if k not in RESULT_COLUMNS and v is not None}
        assert extra == {}, extra


# --- bug 4: the batch job declares its GPUs --------------------------------------------


def test_plan_asks_for_gpus_when_none_is_free_yet():
    from app.core.settings import Settings

    vllm = Settings(llm_engine="vllm", llm_model="/models/m")
    no_gpu = {"CPU": 8.0, "memory": 32 * 2**30}  # the GPU groups start at zero
    plan = make_plan(BatchOptions("in", "out", device="gpu", gpus=2), vllm, no_gpu, 50, None)
    assert plan.device == "gpu" and plan.summarizer == "vllm"
    assert plan.stt_num_gpus == 0.5 and plan.llm_num_gpus == 0.5
    assert (plan.stt_actors, plan.llm_actors) == (2, 2)
    assert "2 GPU" in plan.shortfall  # it waits for the autoscaler, and says so
    # Without a count there is nothing to ask for; a local Ray never gains a GPU.
    with pytest.raises(BatchError, match="--gpus"):
        make_plan(BatchOptions("in", "out", device="gpu"), vllm, no_gpu, 50, None)
    with pytest.raises(BatchError):
        make_plan(BatchOptions("in", "out", device="gpu", gpus=2), vllm, no_gpu, 50, 4)
    with pytest.raises(BatchError, match="--device gpu"):
        make_plan(BatchOptions("in", "out", gpus=2), vllm, no_gpu, 50, None)


# --- throughput: batched Whisper and the Transcriber's @serve.batch ------------------


@pytest.fixture(scope="module")
def jfk_bytes() -> bytes:
    from pathlib import Path

    return (Path(__file__).parent / "data" / "jfk.flac").read_bytes()


JFK = "ask not what your country can do for you"


def _stt(**kw):
    from app.core.model_assets import resolve_stt_model
    from app.core.settings import Settings
    from app.speech.stt import SpeechToText

    s = Settings()
    m = resolve_stt_model(s.stt_model, s.cache_dir)
    return SpeechToText(m.path, m.name, device="cpu", **kw)


def test_batched_pipeline_keeps_each_recordings_own_clock(jfk_bytes):
    """Recordings laid end to end come back separately, each on its own time axis."""
    import numpy as np

    from app.speech.audio import decode
    from app.speech.stt import SttOptions

    stt = _stt(batched=True, batch_size=4)
    pcm = decode(jfk_bytes)
    silence = np.zeros(16000 * 3, dtype=np.float32)
    a, quiet, b = stt.transcribe_many([pcm, silence, pcm], SttOptions(word_timestamps=True))
    for t in (a, b):
        assert JFK in t.text.lower().replace(",", "")
        assert t.duration_s == pytest.approx(11.0, abs=0.1)
        assert 0 <= t.segments[0].start < 1.0 and t.segments[-1].end <= t.duration_s
        assert t.segments[0].words and t.segments[-1].words[-1].end <= t.duration_s
    assert quiet.segments == [] and quiet.text == "" and quiet.duration_s == 3.0
    assert _stt().batched is None  # CPU default: the sequential decoder (measured faster)


@pytest.fixture()
def ray_on_session_cluster(ray_cluster, monkeypatch):
    """This process joined to the session's Ray head (token auth, as everywhere)."""
    import ray

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    ray.init(address=ray_cluster.gcs_address, ignore_reinit_error=True, log_to_driver=False)
    # Classes defined in this module travel by value: workers need not import tests/.
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    yield ray
    ray.shutdown()


def _cpu_batched_transcriber():
    from ray import serve

    from deployments.transcriber import Transcriber

    class CpuBatchedTranscriber(Transcriber.func_or_class):
        """The GPU code path (batched pipeline + @serve.batch) forced on CPU: no GPU here."""

        def __init__(self) -> None:
            super().__init__()
            self.stt = _stt(batched=True, batch_size=4)
            self.batching = True
            self._transcribe_batch.set_max_batch_size(4)
            self._transcribe_batch.set_batch_wait_timeout_s(2.0)
            self.sizes: list[int] = []
            many = self.stt.transcribe_bytes_many

            def recording(items, *args):  # a spy on our own component, not a stand-in
                self.sizes.append(len(items))
                return many(items, *args)

            self.stt.transcribe_bytes_many = recording

        def batch_sizes(self) -> list[int]:
            return self.sizes

    return serve.deployment(CpuBatchedTranscriber, name="GpuPathTranscriber").options(
        max_ongoing_requests=8, ray_actor_options={"num_cpus": 0}
    )


def test_transcriber_batches_concurrent_requests_and_isolates_a_bad_one(
    ray_on_session_cluster, jfk_bytes
):
    from ray import serve

    from tests.cluster_fixtures import free_port

    serve.start(http_options={"host": "127.0.0.1", "port": free_port()})
    handle = serve.run(
        _cpu_batched_transcriber().bind(), name="gpu-path-transcriber", route_prefix=None
    )
    try:
        calls = [
            handle.transcribe.remote(jfk_bytes),
            handle.transcribe.remote(b"not audio at all"),
            handle.transcribe.remote(jfk_bytes),
        ]
        # The streaming method (what the pipeline calls with on_progress) joins the batch.
        streamed = handle.options(stream=True).transcribe_stream.remote(jfk_bytes)
        first, third = calls[0].result(timeout_s=300), calls[2].result(timeout_s=300)
        with pytest.raises(Exception):  # noqa: B017 - only the bad upload fails
            calls[1].result(timeout_s=300)
        stream_items = list(streamed)
        sizes = handle.batch_sizes.remote().result(timeout_s=60)
        info = handle.info.remote().result(timeout_s=60)
    finally:
        serve.delete("gpu-path-transcriber")
    assert sizes == [4]  # the four concurrent requests: one batched pass
    assert JFK in first.transcript.text.lower().replace(",", "")
    # No ticks from a shared pass: only the output.
    assert [type(i).__name__ for i in stream_items] == ["TranscribeOutput"]
    assert stream_items[0].transcript.text == first.transcript.text
    assert JFK in third.transcript.text.lower().replace(",", "")
    assert info["batched"] is True and info["batch_size"] == 4


def test_gpu_config_lets_a_batch_in():
    """A replica can only batch what max_ongoing_requests lets in at once."""
    from app.core.settings import Settings
    from cluster.render import load_serve_config, serve_deployments

    gpu = serve_deployments(load_serve_config(gpu=True))["Transcriber"]
    assert gpu["max_ongoing_requests"] >= Settings().stt_batch_size
