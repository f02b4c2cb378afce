"""LLM engines behind one small interface: llama.cpp (CPU), vLLM (GPU), any OpenAI endpoint.

The summarizer only needs three things from an engine: count tokens, generate
(optionally constrained to a JSON schema) and stream. Each engine maps those to
its own API; schema-constrained decoding is how a 0.5B model's summary always
parses.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import math
import os
import queue
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Protocol

import httpx
from pydantic import BaseModel

from app.core.model_assets import ModelError, ResolvedModel, resolve_llm_model
from app.core.settings import Settings

Message = dict[str, str]
log = logging.getLogger(__name__)


class Completion(BaseModel):
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str = "stop"


class LLMEngine(Protocol):
    name: str  # engine kind: llama_cpp | vllm | openai
    model_name: str
    context_tokens: int

    def count_tokens(self, text: str) -> int: ...

    def generate(
        self,
        messages: list[Message],
        *,
        max_tokens: int,
        temperature: float,
        json_schema: dict | None = None,
    ) -> Completion: ...

    def stream(
        self, messages: list[Message], *, max_tokens: int, temperature: float
    ) -> Iterator[str]: ...


def call_seed(messages: list[Message], temperature: float) -> int:
    """The sampling seed of one call, from its input alone.

    llama.cpp keeps one random stream per loaded model: with a fixed seed at load, a
    call's sample depended on every call the replica served before it, so the same
    transcript got a different summary after another user's request, and one retry
    early in a meeting changed every later topic's answer. Seeding each call from its
    messages makes an answer a function of its input.
    """
    payload = json.dumps([messages, round(temperature, 4)], sort_keys=True, default=str)
    return int.from_bytes(hashlib.sha256(payload.encode()).digest()[:4], "big") & 0x7FFFFFFF


class LlamaCppEngine:
    """llama-cpp-python; its ``response_format`` schema becomes a GBNF grammar."""

    name = "llama_cpp"

    def __init__(self, model: ResolvedModel, context_tokens: int, threads: int = 0) -> None:
        from llama_cpp import Llama

        self.model_name = model.name
        self.context_tokens = context_tokens
        try:
            self._llm = Llama(
                model_path=model.path,
                n_ctx=context_tokens,
                n_threads=threads or None,
                n_batch=512,
                verbose=False,
                seed=42,
            )
        except Exception as exc:
            raise ModelError(
                "AIPP_LLM_MODEL", f"llama.cpp cannot load '{model.path}': {exc}"
            ) from exc
        # One llama.cpp context is not re-entrant; Serve may call from several threads.
        self._lock = threading.Lock()

    def count_tokens(self, text: str) -> int:
        return len(self._llm.tokenize(text.encode("utf-8"), add_bos=False, special=False))

    def _from_scratch(self) -> None:
        """Make the next call read its whole prompt.

        llama.cpp keeps the previous call's tokens and reads only what differs; the rest
        of the prompt is then read in other batches, the logits differ in the last bits,
        and a sample can turn: "… devices and applications, making it …" against "…
        devices and appliances, such as …" for the same messages and seed after a call
        that shared their first words. Reading the shared system prompt again (235
        tokens) is the cost (docs/summaries.md, step 7).
        """
        self._llm.reset()

    def generate(self, messages, *, max_tokens, temperature, json_schema=None) -> Completion:
        kwargs = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        with self._lock:
            self._from_scratch()
            out = self._llm.create_chat_completion(
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                seed=call_seed(messages, temperature),
                **kwargs,
            )
        choice = out["choices"][0]
        usage = out.get("usage") or {}
        return Completion(
            text=choice["message"]["content"] or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def stream(self, messages, *, max_tokens, temperature) -> Iterator[str]:
        with self._lock:
            self._from_scratch()
            for chunk in self._llm.create_chat_completion(
                messages=messages,
                max_tokens=max_tokens,
                temperature=temperature,
                stream=True,
                seed=call_seed(messages, temperature),
            ):
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta


class VLLMEngine:
    """vLLM's ``AsyncLLMEngine`` (``AsyncLLM``) on a GPU, shared with Whisper.

    Not the offline ``vllm.LLM``: its run loop collects every finished request,
    whichever thread sent it, so two Serve threads calling it at once get each
    other's answers. The async engine keys outputs by request id, batches
    concurrent requests into one forward pass and streams tokens. It runs on one
    event loop in a daemon thread; the sync methods (what the summarizer calls
    from Serve's thread pool) submit to that loop, the async ones await on it.
    """

    name = "vllm"

    def __init__(
        self,
        model: ResolvedModel,
        context_tokens: int,
        gpu_memory_utilization: float,
        enforce_eager: bool = False,
    ) -> None:
        try:
            import vllm  # noqa: F401
        except ImportError as exc:
            raise ModelError(
                "AIPP_LLM_ENGINE", f"vllm is not installed; install aipp[gpu] ({exc})"
            ) from None
        # vLLM starts its engine core in a child process. Forked, that child inherits a
        # CUDA context CTranslate2 (Whisper) may have created in this process, and CUDA
        # fails in it; vLLM only switches to spawn by itself when *torch* initialised
        # CUDA. Every process that hosts both (bench/gpu_smoke.py, `aipp plan
        # --calibrate`) gets here, so this is the one place that decides.
        os.environ[VLLM_MP_METHOD_ENV] = "spawn"
        self.model_name = model.name
        self.context_tokens = context_tokens
        self.gpu_memory_utilization = share_of_free_gpu_memory(gpu_memory_utilization)
        self._loop = asyncio.new_event_loop()
        threading.Thread(target=self._loop.run_forever, name="vllm-engine", daemon=True).start()
        # Built on the loop it will run on: its output handler is an asyncio task there.
        self._engine = self._run(
            _open_async_engine(
                model.path, context_tokens, self.gpu_memory_utilization, enforce_eager
            )
        )
        self._tokenizer = self._engine.get_tokenizer()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _prompt(self, messages: list[Message]) -> dict:
        text = self._tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return {"prompt_token_ids": self._tokenizer.encode(text, add_special_tokens=False)}

    def _params(self, max_tokens, temperature, json_schema=None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=json_schema) if json_schema else None
        return SamplingParams(
            max_tokens=max_tokens, temperature=temperature, structured_outputs=structured
        )

    async def agenerate(self, messages, *, max_tokens, temperature, json_schema=None) -> Completion:
        """One request on the shared engine; concurrent callers are batched together."""
        prompt = self._prompt(messages)
        params = self._params(max_tokens, temperature, json_schema)
        final = None
        async for out in self._engine.generate(prompt, params, uuid.uuid4().hex):
            final = out
        if final is None:
            raise RuntimeError("vllm engine: the request ended without an output")
        gen = final.outputs[0]
        return Completion(
            text=gen.text,
            prompt_tokens=len(final.prompt_token_ids or prompt["prompt_token_ids"]),
            completion_tokens=len(gen.token_ids),
            finish_reason=gen.finish_reason or "stop",
        )

    async def astream(self, messages, *, max_tokens, temperature) -> AsyncIterator[str]:
        """Token deltas as the engine produces them (outputs are cumulative per request)."""
        sent = 0
        params = self._params(max_tokens, temperature)
        async for out in self._engine.generate(self._prompt(messages), params, uuid.uuid4().hex):
            text = out.outputs[0].text
            if len(text) > sent:
                yield text[sent:]
                sent = len(text)

    def generate(self, messages, *, max_tokens, temperature, json_schema=None) -> Completion:
        return self._run(
            self.agenerate(
                messages, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema
            )
        )

    def close(self) -> None:
        """Stop the engine (its GPU memory and worker processes) and the loop thread."""
        self._engine.shutdown()
        self._loop.call_soon_threadsafe(self._loop.stop)

    def stream(self, messages, *, max_tokens, temperature) -> Iterator[str]:
        chunks: queue.Queue = queue.Queue()
        done = object()

        async def pump() -> None:
            try:
                async for delta in self.astream(
                    messages, max_tokens=max_tokens, temperature=temperature
                ):
                    chunks.put(delta)
            except BaseException as exc:  # handed to the consuming thread
                chunks.put(exc)
            finally:
                chunks.put(done)

        asyncio.run_coroutine_threadsafe(pump(), self._loop)
        while (item := chunks.get()) is not done:
            if isinstance(item, BaseException):
                raise item
            yield item


VLLM_MP_METHOD_ENV = "VLLM_WORKER_MULTIPROC_METHOD"
# Left free beyond vLLM's share for a busy neighbour on the same GPU (Whisper's batches
# grow its working memory), so vLLM's start-up profiling does not count the neighbour's
# growth as its own and neither side runs out.
GPU_FREE_MARGIN_BYTES = 1 << 30
FREE_MEMORY_SAMPLES = 3  # readings 0.5 s apart; the lowest counts (the neighbour's peak)


def gpu_memory_share(configured: float, free_bytes: int, total_bytes: int) -> float:
    """vLLM's ``gpu_memory_utilization``: the configured share, or what is free now.

    vLLM refuses to start when less than its share of the *whole* GPU is free, which is
    the case when Whisper on the same GPU already holds more than the rest (a busy
    Transcriber that started first). Taking what is free (less a margin) lets it start
    with a smaller KV cache instead of failing.
    """
    fits = (free_bytes - GPU_FREE_MARGIN_BYTES) / total_bytes
    if fits <= 0:
        raise ModelError(
            "AIPP_LLM_GPU_MEMORY_UTILIZATION",
            f"only {free_bytes / 2**30:.1f} GiB of {total_bytes / 2**30:.1f} GiB GPU memory "
            "is free: nothing left for vLLM beside what holds the rest",
        )
    return min(configured, math.floor(fits * 1000) / 1000)  # never above what is free


def _visible_gpu_memory() -> tuple[int, int] | None:
    """(free, total) bytes of the first GPU this process may use, from NVML.

    NVML, not torch: a CUDA context here would cost memory on the shared GPU for the
    replica's whole life. None when there is no NVML (no GPU, or not the CUDA build).
    """
    try:
        import pynvml  # nvidia-ml-py, a vLLM dependency
    except ImportError:
        return None
    visible = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0].strip() or "0"
    try:
        pynvml.nvmlInit()
        try:
            if visible.startswith(("GPU-", "MIG-")):
                handle = pynvml.nvmlDeviceGetHandleByUUID(visible)
            else:
                handle = pynvml.nvmlDeviceGetHandleByIndex(int(visible))
            info = pynvml.nvmlDeviceGetMemoryInfo(handle)
            return int(info.free), int(info.total)
        finally:
            pynvml.nvmlShutdown()
    except Exception as exc:  # pynvml.NVMLError and friends: size as configured
        log.warning("cannot read GPU memory through NVML (%s); using the configured share", exc)
        return None


def share_of_free_gpu_memory(configured: float) -> float:
    """The configured share, lowered to what is free on the visible GPU (see above)."""
    readings = []
    for i in range(FREE_MEMORY_SAMPLES):
        if i:
            time.sleep(0.5)
        reading = _visible_gpu_memory()
        if reading is None:
            return configured
        readings.append(reading)
    free = min(f for f, _ in readings)
    total = readings[0][1]
    share = gpu_memory_share(configured, free, total)
    if share < configured:
        log.warning(
            "vLLM takes %.3f of the GPU, not %.3f: %.1f GiB of %.1f GiB is free",
            share,
            configured,
            free / 2**30,
            total / 2**30,
        )
    return share


async def _open_async_engine(
    path: str, context_tokens: int, gpu_memory_utilization: float, enforce_eager: bool
):
    """``AsyncLLMEngine.from_engine_args`` (vLLM 0.29: an alias of ``v1 AsyncLLM``)."""
    from vllm import AsyncEngineArgs, AsyncLLMEngine

    args = AsyncEngineArgs(
        model=path,
        max_model_len=context_tokens,
        gpu_memory_utilization=gpu_memory_utilization,
        # CUDA graphs: slower start-up (capture), faster decode; docs/gpu.md.
        enforce_eager=enforce_eager,
        disable_log_stats=True,
    )
    return AsyncLLMEngine.from_engine_args(args)


class OpenAIEngine:
    """Any OpenAI-compatible ``/chat/completions`` endpoint: the phase-1 managed option."""

    name = "openai"

    def __init__(
        self,
        model: ResolvedModel,
        base_url: str,
        api_key: str | None,
        context_tokens: int,
        timeout_s: float = 120.0,
    ) -> None:
        self.model_name = model.name
        self.context_tokens = context_tokens
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout_s
        )

    def count_tokens(self, text: str) -> int:
        # No tokenizer for a remote model: ~4 characters a token is the usual estimate.
        return max(1, len(text) // 4)

    def _post(self, body: dict) -> dict:
        try:
            resp = self._client.post("/chat/completions", json=body)
        except httpx.HTTPError as exc:
            raise RuntimeError(
                f"openai engine: cannot reach {self._client.base_url}: {exc}"
            ) from exc
        if resp.status_code >= 400:
            raise RuntimeError(f"openai engine: HTTP {resp.status_code}: {resp.text[:300]}")
        return resp.json()

    def generate(self, messages, *, max_tokens, temperature, json_schema=None) -> Completion:
        body: dict = {
            "model": self.model_name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
        }
        if json_schema is not None:
            body["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "summary", "schema": json_schema, "strict": True},
            }
        data = self._post(body)
        choice = data["choices"][0]
        usage = data.get("usage") or {}
        return Completion(
            text=choice["message"].get("content") or "",
            prompt_tokens=int(usage.get("prompt_tokens", 0)),
            completion_tokens=int(usage.get("completion_tokens", 0)),
            finish_reason=choice.get("finish_reason") or "stop",
        )

    def stream(self, messages, *, max_tokens, temperature) -> Iterator[str]:
        body = {
            "model": self.model_name,
            "messages": messages,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "stream": True,
        }
        with self._client.stream("POST", "/chat/completions", json=body) as resp:
            if resp.status_code >= 400:
                raise RuntimeError(f"openai engine: HTTP {resp.status_code}")
            for line in resp.iter_lines():
                if not line.startswith("data:"):
                    continue
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                delta = json.loads(payload)["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta


def build_engine(settings: Settings) -> LLMEngine:
    model = resolve_llm_model(settings.llm_engine, settings.llm_model, settings.cache_dir)
    if settings.llm_engine == "llama_cpp":
        return LlamaCppEngine(model, settings.llm_context_tokens, settings.llm_threads)
    if settings.llm_engine == "vllm":
        return VLLMEngine(
            model,
            settings.llm_context_tokens,
            settings.llm_gpu_memory_utilization,
            enforce_eager=settings.llm_enforce_eager,
        )
    import os

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIEngine(
        model,
        settings.openai_base_url,
        key or os.environ.get("OPENAI_API_KEY"),
        settings.llm_context_tokens,
    )
