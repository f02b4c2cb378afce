"""Domain models shared by the HTTP API, the deployments and the batch pipeline."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None


class Segment(BaseModel):
    id: int
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    text: str
    words: list[Word] | None = None
    # Decoder statistics, as OpenAI's verbose_json reports them.
    seek: int | None = None
    tokens: list[int] | None = None
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class Transcript(BaseModel):
    text: str
    language: str
    language_probability: float | None = None
    duration_s: float
    segments: list[Segment]


class Summary(BaseModel):
    """What the LLM must return; also the JSON schema that constrains its decoding."""

    summary: str = Field(description="A few sentences on what was said.")
    key_points: list[str] = Field(description="The main points, one short sentence each.")
    action_items: list[str] = Field(description="Tasks someone committed to or was asked to do.")


class Timings(BaseModel):
    decode_s: float = 0.0
    transcribe_s: float = 0.0
    summarize_s: float = 0.0
    total_s: float = 0.0


class ModelIds(BaseModel):
    stt: str
    llm: str


class SummarizeResult(BaseModel):
    transcript: Transcript
    summary: Summary
    models: ModelIds
    timings: Timings


class TranscribeOutput(BaseModel):
    """What the Transcriber deployment returns: the transcript plus how long each step took."""

    transcript: Transcript
    decode_s: float
    transcribe_s: float
    model: str


class SummarizeOutput(BaseModel):
    summary: Summary
    summarize_s: float
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 1


MAX_LIST_ITEMS = 6


def summary_json_schema() -> dict:
    """A plain JSON schema (no $defs/titles) that llama.cpp's grammar converter accepts.

    The bounds matter: without ``maxItems`` a small model can loop on one list item
    until it runs out of tokens.
    """
    # No ``maxLength``: llama.cpp unrolls it into one grammar rule per character, which
    # blows the sampler's stack in a worker thread. ``max_tokens`` bounds length instead.
    item = {"type": "string"}
    return {
        "type": "object",
        "properties": {
            "summary": {"type": "string"},
            "key_points": {"type": "array", "items": item, "maxItems": MAX_LIST_ITEMS},
            "action_items": {"type": "array", "items": item, "maxItems": MAX_LIST_ITEMS},
        },
        "required": ["summary", "key_points", "action_items"],
        "additionalProperties": False,
    }
