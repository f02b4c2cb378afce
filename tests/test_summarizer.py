"""The summary logic on the real bundled LLM: schema-constrained output and map-reduce."""

from __future__ import annotations

import pytest

from app.core.model_assets import resolve_llm_model
from app.core.settings import Settings
from app.llm.engines import LlamaCppEngine
from app.llm.summarize import TranscriptSummarizer, parse_summary
from tests.conftest import LLM_THREADS

LONG_TRANSCRIPT = " ".join(
    [
        "Good morning everyone, this is the weekly planning meeting for the mobile app.",
        "Maria reported that the login crash on Android is fixed and will ship on Friday.",
        "John said the payment provider raised its fees, so finance must review the contract.",
        "The team agreed to move the design review to next Tuesday.",
        "Priya will write the release notes and send them to support by Thursday.",
        "We discussed the onboarding survey; completion rates dropped to forty percent.",
        "Alex will run an experiment with a shorter survey next sprint.",
        "Finally, the office will be closed on Monday for the holiday.",
    ]
    * 2  # twice the 640-token window's input budget: two map calls and a reduce
)


@pytest.fixture(scope="module")
def small_engine(tmp_path_factory):
    """The bundled model with a deliberately small context window, to force map-reduce."""
    settings = Settings()
    model = resolve_llm_model("llama_cpp", settings.llm_model, settings.cache_dir)
    return LlamaCppEngine(model, context_tokens=640, threads=LLM_THREADS)


def test_long_transcript_goes_through_map_reduce(small_engine):
    summarizer = TranscriptSummarizer(small_engine, max_output_tokens=160, temperature=0.0)
    assert small_engine.count_tokens(LONG_TRANSCRIPT) > summarizer.input_budget()
    out = summarizer.summarize(LONG_TRANSCRIPT)
    assert out.chunks >= 2
    assert out.summary.summary.strip()
    assert out.prompt_tokens > 0 and out.completion_tokens > 0


def test_chunks_respect_the_budget(small_engine):
    summarizer = TranscriptSummarizer(small_engine, max_output_tokens=160)
    budget = summarizer.input_budget()
    chunks = summarizer.split(LONG_TRANSCRIPT, budget)
    assert len(chunks) >= 2
    assert all(small_engine.count_tokens(c) <= budget for c in chunks)
    # Nothing is lost: every sentence appears in some chunk.
    assert " ".join(chunks).count("Priya will write") == LONG_TRANSCRIPT.count("Priya will write")


def test_empty_transcript_never_calls_the_model(small_engine):
    out = TranscriptSummarizer(small_engine).summarize("   ")
    assert out.completion_tokens == 0 and out.prompt_tokens == 0
    assert "no speech" in out.summary.summary.lower()


def test_context_too_small_is_a_clear_error(small_engine):
    with pytest.raises(ValueError, match="AIPP_LLM_CONTEXT_TOKENS"):
        TranscriptSummarizer(small_engine, max_output_tokens=600).input_budget()


def test_truncated_json_is_repaired():
    cut = '{"summary": "The team met.", "key_points": ["Crash fixed", "Crash fixed", "Fees'
    summary = parse_summary(cut)
    assert summary.summary == "The team met."
    assert summary.key_points == ["Crash fixed", "Fees"]
    assert summary.action_items == []
