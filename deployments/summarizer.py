"""Summarizer deployment: the LLM engine behind summaries and chat completions.

``user_config.system_prompt`` is applied in place through ``reconfigure``, so a
new prompt rolls out without restarting replicas or dropping requests.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

from ray import serve

from app.core import metrics
from app.core.logs import get_logger, log_context
from app.core.schemas import SummarizeOutput
from app.core.settings import get_settings
from app.llm.engines import Completion, build_engine
from app.llm.summarize import GROUNDED_SYSTEM_PROMPT, TranscriptSummarizer

logger = logging.getLogger("ray.serve")
log = get_logger()


@serve.deployment(name="Summarizer", ray_actor_options={"num_cpus": 1})
class Summarizer:
    def __init__(self) -> None:
        settings = get_settings()
        self.engine = build_engine(settings)
        self.summarizer = TranscriptSummarizer(
            self.engine,
            max_output_tokens=settings.llm_max_output_tokens,
            temperature=settings.llm_temperature,
        )
        logger.info("Summarizer ready: %s via %s", self.engine.model_name, self.engine.name)

    def reconfigure(self, user_config: dict | None) -> None:
        prompt = (user_config or {}).get("system_prompt")
        self.summarizer.system_prompt = prompt or GROUNDED_SYSTEM_PROMPT
        logger.info("Summarizer system prompt set (%d chars)", len(self.summarizer.system_prompt))

    def summarize(
        self,
        text: str,
        instruction: str | None = None,
        task_id: str | None = None,
        segments: list[dict] | None = None,
        duration_s: float | None = None,
    ) -> SummarizeOutput:
        """Pass ``segments`` (id, start, end, text) so evidence carries timestamps."""
        with log_context(task_id=task_id):
            out = self.summarizer.summarize(text, instruction, segments, duration_s)
            metrics.record_summary(out.summarize_s, out.prompt_tokens, out.completion_tokens)
            log.info(
                "summarized in %.3fs (%d tokens in, %d out, %d chunks, %s, "
                "%d retries, %d items dropped, %d repaired)",
                out.summarize_s,
                out.prompt_tokens,
                out.completion_tokens,
                out.chunks,
                out.summary.method,
                out.retries,
                out.dropped_items,
                out.repaired_items,
            )
        return out

    def chat(
        self,
        messages: list[dict],
        max_tokens: int,
        temperature: float,
        json_schema: dict | None = None,
        task_id: str | None = None,
    ) -> Completion:
        with log_context(task_id=task_id):
            t0 = time.perf_counter()
            out = self.engine.generate(
                messages, max_tokens=max_tokens, temperature=temperature, json_schema=json_schema
            )
            elapsed = time.perf_counter() - t0
            metrics.record_chat(elapsed, out.prompt_tokens, out.completion_tokens)
            log.info(
                "chat completion in %.3fs (%d tokens in, %d out, %s)",
                elapsed,
                out.prompt_tokens,
                out.completion_tokens,
                out.finish_reason,
            )
        return out

    def chat_stream(
        self, messages: list[dict], max_tokens: int, temperature: float, task_id: str | None = None
    ) -> Iterator[str]:
        t0 = time.perf_counter()
        parts: list[str] = []
        for delta in self.engine.stream(messages, max_tokens=max_tokens, temperature=temperature):
            parts.append(delta)
            yield delta
        elapsed = time.perf_counter() - t0
        # The stream has no usage; count what was sent (prompt: message text, no template).
        tokens_out = self.engine.count_tokens("".join(parts)) if parts else 0
        tokens_in = sum(self.engine.count_tokens(str(m.get("content") or "")) for m in messages)
        metrics.record_chat(elapsed, tokens_in, tokens_out)
        with log_context(task_id=task_id):
            log.info("chat stream in %.3fs (~%d tokens in, %d out)", elapsed, tokens_in, tokens_out)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def info(self) -> dict:
        return {
            "model": self.engine.model_name,
            "engine": self.engine.name,
            "context_tokens": self.engine.context_tokens,
            "system_prompt": self.summarizer.system_prompt,
        }
