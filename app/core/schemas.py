"""Domain models shared by the HTTP API, the deployments and the batch pipeline."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None
    speaker: str | None = Field(None, description="Set when diarized and words were asked for.")


class Segment(BaseModel):
    id: int
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    text: str
    speaker: str | None = Field(None, description="Speaker id (or name), when diarized.")
    words: list[Word] | None = None
    # Decoder statistics, as OpenAI's verbose_json reports them.
    seek: int | None = None
    tokens: list[int] | None = None
    temperature: float | None = None
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


class SpeakerTurn(BaseModel):
    """One stretch of one speaker's voice, from the Diarizer (app/speech/diarize.py)."""

    start: float
    end: float
    speaker: str


class SpeakerInfo(BaseModel):
    id: str = Field(description="Stable label from the diarizer, e.g. `speaker_1`.")
    name: str | None = Field(None, description="Set by PATCH /v1/tasks/{id}/speakers.")
    speaking_s: float = Field(description="Total speaking time in seconds.")


class Transcript(BaseModel):
    text: str
    language: str
    language_probability: float | None = None
    duration_s: float
    segments: list[Segment]
    speakers: list[SpeakerInfo] | None = Field(None, description="Set when diarized.")
    turns: list[SpeakerTurn] | None = Field(
        None, description="Diarizer turns, kept so speakers can be renamed without re-running it."
    )


class Evidence(BaseModel):
    """Where in the transcript an item comes from; the quote was checked to occur there."""

    segments: list[int] = Field(description="Transcript segment ids the quote spans.")
    start: float | None = Field(None, description="Seconds; None for text-only input.")
    end: float | None = None
    quote: str = Field(description="Verbatim words of the transcript (normalized case).")


class Chapter(BaseModel):
    start: float
    end: float
    title: str
    gist: str = Field(description="One line on what this part is about.")


class Summary(BaseModel):
    """The summary a caller gets. The evidence lists run parallel to the item lists."""

    summary: str = Field(description="A few sentences on what was said.")
    key_points: list[str] = Field(description="The main points, one short sentence each.")
    action_items: list[str] = Field(description="Tasks someone committed to or was asked to do.")
    key_points_evidence: list[Evidence] = Field(
        default_factory=list, description="One per key point, same order."
    )
    action_items_evidence: list[Evidence] = Field(
        default_factory=list, description="One per action item, same order."
    )
    chapters: list[Chapter] = Field(
        default_factory=list, description="For long recordings (about 10 minutes or more)."
    )
    method: str = Field(
        "llm",
        description="`llm`, `llm_retry` (the first answer failed the checks), "
        "`llm_extractive_points` (the LLM's summary; some key points are central transcript "
        "sentences because the LLM gave too few grounded ones), "
        "`extractive_fallback` (central transcript sentences: the LLM output failed twice) "
        "or `none` (no speech).",
    )


class Timings(BaseModel):
    decode_s: float = 0.0
    transcribe_s: float = 0.0
    summarize_s: float = 0.0
    diarize_s: float = Field(0.0, description="In parallel with transcribe_s.")
    total_s: float = 0.0


class ModelIds(BaseModel):
    stt: str
    llm: str
    diarizer: str | None = None


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


class DiarizeOutput(BaseModel):
    """What the Diarizer deployment returns: who spoke when, and how it was found."""

    turns: list[SpeakerTurn]
    speakers: list[SpeakerInfo]
    method: str = Field(description="`channels` (one speaker per stereo channel) or `model`.")
    decode_s: float = 0.0
    diarize_s: float = 0.0
    model: str = ""


class SummarizeOutput(BaseModel):
    summary: Summary
    summarize_s: float
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    chunks: int = 1
    retries: int = Field(0, description="LLM answers rejected by the checks and retried.")
    dropped_items: int = Field(0, description="Items dropped: no evidence or no commitment.")
    repaired_items: int = Field(0, description="Items whose quote was trimmed to what occurs.")


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
