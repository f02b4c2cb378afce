"""LLM engines behind one small interface: llama.cpp (CPU), vLLM (GPU), any OpenAI endpoint.

The summarizer only needs three things from an engine: count tokens, generate
(optionally constrained to a JSON schema) and stream. Each engine maps those to
its own API; schema-constrained decoding is how a 0.5B model's summary always
parses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from typing import Protocol

import httpx
from pydantic import BaseModel

from app.core.model_assets import ModelError, ResolvedModel, resolve_llm_model
from app.core.settings import Settings

Message = dict[str, str]


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

    def generate(self, messages, *, max_tokens, temperature, json_schema=None) -> Completion:
        kwargs = {}
        if json_schema is not None:
            kwargs["response_format"] = {"type": "json_object", "schema": json_schema}
        with self._lock:
            out = self._llm.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=temperature, **kwargs
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
            for chunk in self._llm.create_chat_completion(
                messages=messages, max_tokens=max_tokens, temperature=temperature, stream=True
            ):
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta


class VLLMEngine:
    """vLLM's offline engine on a GPU, sharing it with Whisper (gpu_memory_utilization)."""

    name = "vllm"

    def __init__(self, model: ResolvedModel, context_tokens: int, gpu_memory_utilization: float):
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ModelError(
                "AIPP_LLM_ENGINE", f"vllm is not installed; install aipp[gpu] ({exc})"
            ) from None
        self.model_name = model.name
        self.context_tokens = context_tokens
        self._llm = LLM(
            model=model.path,
            max_model_len=context_tokens,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=False,
        )
        self._tokenizer = self._llm.get_tokenizer()

    def count_tokens(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False))

    def _params(self, max_tokens, temperature, json_schema=None):
        from vllm import SamplingParams
        from vllm.sampling_params import StructuredOutputsParams

        structured = StructuredOutputsParams(json=json_schema) if json_schema else None
        return SamplingParams(
            max_tokens=max_tokens, temperature=temperature, structured_outputs=structured
        )

    def generate(self, messages, *, max_tokens, temperature, json_schema=None) -> Completion:
        outputs = self._llm.chat(
            [messages], self._params(max_tokens, temperature, json_schema), use_tqdm=False
        )
        out = outputs[0]
        gen = out.outputs[0]
        return Completion(
            text=gen.text,
            prompt_tokens=len(out.prompt_token_ids or []),
            completion_tokens=len(gen.token_ids),
            finish_reason=gen.finish_reason or "stop",
        )

    def stream(self, messages, *, max_tokens, temperature) -> Iterator[str]:
        # The offline engine has no token stream; yield the whole answer as one chunk.
        yield self.generate(messages, max_tokens=max_tokens, temperature=temperature).text


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
        return VLLMEngine(model, settings.llm_context_tokens, settings.llm_gpu_memory_utilization)
    import os

    key = settings.openai_api_key.get_secret_value() if settings.openai_api_key else None
    return OpenAIEngine(
        model,
        settings.openai_base_url,
        key or os.environ.get("OPENAI_API_KEY"),
        settings.llm_context_tokens,
    )
