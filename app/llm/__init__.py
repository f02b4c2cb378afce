"""LLM engines (llama.cpp, vLLM, OpenAI-compatible) and the summary logic built on them."""

from app.llm.engines import Completion, LLMEngine, build_engine

__all__ = ["Completion", "LLMEngine", "build_engine"]
