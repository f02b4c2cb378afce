"""Domain models shared by the HTTP API, the deployments and the batch pipeline."""

from __future__ import annotations

from pydantic import BaseModel, Field


class Word(BaseModel):
    start: float
    end: float
    word: str
    probability: float | None = None
    speaker: str | None = Field(None, description="Set when diarized and words were asked for.")
    speakers: list[str] | None = Field(
        None, description="When diarized and two people talk over this word: both, main first."
    )


class Segment(BaseModel):
    id: int
    start: float = Field(description="Seconds from the start of the audio.")
    end: float
    text: str
    speaker: str | None = Field(None, description="Speaker id (or name), when diarized.")
    speakers: list[str] | None = Field(
        None, description="When diarized and two people talk over the segment: both, main first."
    )
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


class SpeakerCount(BaseModel):
    """The diarizer's estimate of how many people speak, and how sure it is."""

    count: int = Field(description="Speakers found.")
    confidence: float | None = Field(
        None, ge=0, le=1, description="1: one count stands out; 0: two counts tie; None: unknown."
    )
    method: str = Field(description="`eigengap`, `bounded` (min/max given), `channels`, ...")
    overlap_s: float = Field(0.0, description="Seconds where two speakers talk at once.")
    unheard: int = Field(
        0,
        description="Of `count`, people only the segmentation model heard: their turns were"
        " too short or overlapped for a voice window; `confidence` is about the others.",
    )


class SpeakerInfo(BaseModel):
    id: str = Field(description="Stable label from the diarizer, e.g. `speaker_1`.")
    name: str | None = Field(None, description="Set by PATCH /v1/tasks/{id}/speakers.")
    speaking_s: float = Field(description="Total speaking time in seconds.")


class LanguageWindow(BaseModel):
    """One stretch of speech whose language was detected on its own."""

    start: float = Field(description="Seconds from the start of the audio.")
    language: str
    probability: float


class LanguageDetection(BaseModel):
    """How the transcript's language was found and which model it was routed to."""

    method: str = Field(
        description="`forced` (the caller named it), `checked` (the English model's "
        "transcript was confident throughout: English, no detection pass), `detected` (a "
        "multilingual model listened to windows of speech: the first seconds, or where the "
        "English model was unsure), or `model` (no speech to listen to)."
    )
    languages: list[str] = Field(description="Every language heard, most speech first.")
    windows: list[LanguageWindow] = Field(default_factory=list)
    allowed: list[str] | None = Field(None, description="The caller's expected languages.")
    model: str = Field(description="The Whisper model that wrote the transcript.")
    detect_s: float = Field(0.0, description="Seconds spent detecting.")
    text_check: dict | None = Field(
        None,
        description="When the audio's best guess was unsure (below 0.8): what the audio "
        "said (`audio_language`, `audio_probability`) and what a text language "
        "identifier said of the words written for it (`text_language`, "
        "`text_probability`); the text wins when it is sure (0.9) of another language.",
    )


class Transcript(BaseModel):
    text: str
    language: str
    language_probability: float | None = None
    detection: LanguageDetection | None = Field(
        None, description="Set when the service routes between Whisper models by language."
    )
    duration_s: float
    segments: list[Segment]
    speakers: list[SpeakerInfo] | None = Field(None, description="Set when diarized.")
    speaker_count: SpeakerCount | None = Field(None, description="Set when diarized.")
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
        "`extractive_fallback` (central transcript sentences: the LLM output failed twice), "
        "`none` (no speech) or `skipped` (asked for none: `summarize=false`).",
    )
    language: str | None = Field(
        None,
        description="ISO-639-1 code of the summary's language, when it is not English or "
        "was asked for (`summary_language`); evidence quotes stay in the spoken language.",
    )


class Redaction(BaseModel):
    """What PII redaction did to a result (``redact_pii``); never the values it removed."""

    mode: str = Field(description="`label`, `mask` or `pseudonym`.")
    entities: list[str] = Field(description="The policy: the entity types redacted.")
    found: dict[str, int] = Field(default_factory=dict, description="Replacements per entity type.")
    audio_spans: list[tuple[float, float]] = Field(
        default_factory=list, description="Seconds of audio that held redacted words."
    )
    audio: str | None = Field(
        None,
        description="`tone` when a redacted audio copy replaces the stored audio (GET "
        "/v1/tasks/{id}/audio serves it).",
    )
    original_kept: bool = Field(False, description="With audio: the original is kept too.")


class Timings(BaseModel):
    decode_s: float = 0.0
    transcribe_s: float = 0.0
    summarize_s: float = 0.0
    redact_s: float = Field(0.0, description="Finding and replacing personal data.")
    diarize_s: float = Field(0.0, description="In parallel with transcribe_s.")
    total_s: float = 0.0


class ModelIds(BaseModel):
    stt: str
    llm: str
    diarizer: str | None = None


class SummarizeResult(BaseModel):
    transcript: Transcript
    translation: Transcript | None = Field(
        None, description="The speech in English (`translate_to=en`), beside the original."
    )
    summary: Summary
    models: ModelIds
    timings: Timings
    redaction: Redaction | None = Field(None, description="Set when redact_pii was asked for.")


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
    speaker_count: SpeakerCount | None = None


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
