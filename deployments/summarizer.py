"""Summarizer deployment: the LLM engine behind summaries and chat completions.

``user_config.system_prompt`` is applied in place through ``reconfigure``, so a
new prompt rolls out without restarting replicas or dropping requests.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from ray import serve

from app.llm.engines import Completion, build_engine
from app.llm.summarize import DEFAULT_SYSTEM_PROMPT, TranscriptSummarizer
from app.schemas import SummarizeOutput
from app.settings import get_settings

logger = logging.getLogger("ray.serve")


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
        self.summarizer.system_prompt = prompt or DEFAULT_SYSTEM_PROMPT
        logger.info("Summarizer system prompt set (%d chars)", len(self.summarizer.system_prompt))

    def summarize(self, text: str, instruction: str | None = None) -> SummarizeOutput:
        return self.summarizer.summarize(text, instruction)

    def chat(self, messages: list[dict], max_tokens: int, temperature: float,
             json_schema: dict | None = None) -> Completion:
        return self.engine.generate(messages, max_tokens=max_tokens, temperature=temperature,
                                    json_schema=json_schema)

    def chat_stream(self, messages: list[dict], max_tokens: int,
                    temperature: float) -> Iterator[str]:
        yield from self.engine.stream(messages, max_tokens=max_tokens, temperature=temperature)

    def count_tokens(self, text: str) -> int:
        return self.engine.count_tokens(text)

    def info(self) -> dict:
        return {
            "model": self.engine.model_name,
            "engine": self.engine.name,
            "context_tokens": self.engine.context_tokens,
            "system_prompt": self.summarizer.system_prompt,
        }
