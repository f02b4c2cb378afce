"""The OpenAI-compatible endpoints, driven by the official ``openai`` SDK against `aipp serve`."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest
from openai import OpenAI

from app.speech.subtitles import format_timestamp, to_srt, to_vtt
from tests.conftest import DATA, JFK_PHRASE, make_key

serve = pytest.mark.serve

JFK_DURATION = 11.0
LLM = "qwen2.5-0.5b-instruct-q4_k_m"
STT = "whisper-tiny.en"

SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
VTT_TIME = r"(\d{2}):(\d{2}):(\d{2})\.(\d{3})"


def normalize(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z ]+", "", text.lower())).strip()


def seconds(h: str, m: str, s: str, ms: str) -> float:
    return int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 1000


@pytest.fixture(scope="module")
def oai_key(service) -> str:
    """A key of its own tenant, so these requests have their own rate-limit bucket."""
    return make_key(service, "openai-compat")


@pytest.fixture(scope="module")
def auth(oai_key) -> dict[str, str]:
    return {"Authorization": f"Bearer {oai_key}"}


@pytest.fixture(scope="module")
def oai(service, oai_key) -> OpenAI:
    return OpenAI(base_url=service.url + "/v1", api_key=oai_key, max_retries=0, timeout=600)


@pytest.fixture(scope="module")
def jfk() -> bytes:
    return (DATA / "jfk.flac").read_bytes()


def transcribe(oai: OpenAI, jfk: bytes, **kwargs):
    kwargs.setdefault("model", "whisper-1")
    return oai.audio.transcriptions.create(file=("jfk.flac", jfk), **kwargs)


def parse_srt(text: str) -> list[tuple[float, float, str]]:
    blocks = [b for b in text.strip().split("\n\n") if b.strip()]
    cues = []
    for i, block in enumerate(blocks, start=1):
        lines = block.split("\n")
        assert lines[0] == str(i), f"cue {i} is numbered {lines[0]!r}"
        m = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert m, f"bad SRT timing line {lines[1]!r}"
        cues.append((seconds(*m.groups()[:4]), seconds(*m.groups()[4:]), " ".join(lines[2:])))
    return cues


def parse_vtt(text: str) -> list[tuple[float, float, str]]:
    assert text.startswith("WEBVTT\n"), text[:40]
    blocks = [b for b in text.split("\n\n")[1:] if b.strip()]
    cues = []
    for block in blocks:
        lines = block.split("\n")
        m = re.fullmatch(f"{VTT_TIME} --> {VTT_TIME}", lines[0])
        assert m, f"bad VTT timing line {lines[0]!r}"
        cues.append((seconds(*m.groups()[:4]), seconds(*m.groups()[4:]), " ".join(lines[1:])))
    return cues


def assert_monotonic(cues: list[tuple[float, float, str]], duration: float) -> None:
    assert cues
    last_start = 0.0
    for start, end, text in cues:
        assert text.strip()
        assert 0.0 <= start <= end <= duration + 0.5
        assert start >= last_start
        last_start = start


# --- Subtitles (no service needed) ----------------------------------------------------


def test_format_timestamp():
    assert format_timestamp(0) == "00:00:00,000"
    assert format_timestamp(3661.5) == "01:01:01,500"
    assert format_timestamp(59.9996) == "00:01:00,000"
    assert format_timestamp(-1) == "00:00:00,000"
    assert format_timestamp(7.25, ".") == "00:00:07.250"


def test_subtitles_from_dicts_skip_empty_and_stay_monotonic():
    segments = [
        {"start": 0.5, "end": 1.5, "text": " Hello "},
        {"start": 1.5, "end": 1.6, "text": "  "},
        {"start": 0.2, "end": 0.1, "text": "a <b> & c --> d\n\nnext"},
    ]
    srt = to_srt(segments)
    cues = parse_srt(srt)
    assert [c[2] for c in cues] == ["Hello", "a <b> & c --> d next"]
    assert cues[1][0] == 0.5 and cues[1][1] == 0.5  # start never goes back; end >= start
    vtt = to_vtt(segments)
    assert "a &lt;b&gt; &amp; c --&gt; d" in vtt
    assert len(parse_vtt(vtt)) == 2
    assert to_srt([]) == "" and to_vtt([]) == "WEBVTT\n"


# --- Transcriptions ----------------------------------------------------------------------


@serve
def test_models_list(oai):
    ids = [m.id for m in oai.models.list().data]
    assert ids == [STT, LLM]
    assert oai.models.retrieve("whisper-1").id == "whisper-1"
    with pytest.raises(openai.NotFoundError):
        oai.models.retrieve("gpt-4o")


@serve
@pytest.mark.parametrize("model", ["whisper-1", STT])
def test_transcription_json(oai, jfk, model):
    result = transcribe(oai, jfk, model=model)
    assert JFK_PHRASE in normalize(result.text)
    assert result.usage.seconds == 11


@serve
def test_transcription_text(oai, jfk):
    text = transcribe(oai, jfk, response_format="text", language="en", temperature=0)
    assert isinstance(text, str)
    assert JFK_PHRASE in normalize(text)


@serve
def test_transcription_srt(oai, jfk):
    srt = transcribe(oai, jfk, response_format="srt")
    cues = parse_srt(srt)
    assert_monotonic(cues, JFK_DURATION)
    assert JFK_PHRASE in normalize(" ".join(c[2] for c in cues))


@serve
def test_transcription_vtt(oai, jfk):
    vtt = transcribe(oai, jfk, response_format="vtt")
    cues = parse_vtt(vtt)
    assert_monotonic(cues, JFK_DURATION)
    assert JFK_PHRASE in normalize(" ".join(c[2] for c in cues))


@serve
def test_transcription_verbose_json_segments(oai, jfk):
    result = transcribe(oai, jfk, response_format="verbose_json", prompt="JFK inaugural")
    assert result.language == "english"
    assert result.duration == pytest.approx(JFK_DURATION, abs=0.1)
    assert JFK_PHRASE in normalize(result.text)
    assert result.words is None
    segments = result.segments
    assert segments and [s.id for s in segments] == list(range(len(segments)))
    for seg in segments:
        assert 0 <= seg.start <= seg.end <= result.duration + 0.5
        assert isinstance(seg.seek, int) and isinstance(seg.tokens, list)
        assert seg.temperature == 0.0
    raw = result.model_dump()
    assert raw["task"] == "transcribe"
    assert {"avg_logprob", "compression_ratio", "no_speech_prob"} <= set(raw["segments"][0])


@serve
def test_transcription_word_timestamps(oai, jfk):
    result = transcribe(
        oai, jfk, response_format="verbose_json", timestamp_granularities=["word", "segment"]
    )
    words = result.words
    assert words and len(words) >= 20
    assert normalize(" ".join(w.word for w in words)).startswith("and so my fellow americans")
    last_start = 0.0
    for w in words:
        assert w.word == w.word.strip() and w.word
        assert 0.0 <= w.start <= w.end <= result.duration
        assert w.start >= last_start
        last_start = w.start
    assert result.segments
    words_only = transcribe(
        oai, jfk, response_format="verbose_json", timestamp_granularities=["word"]
    )
    assert words_only.words and words_only.segments is None


# --- Transcription errors ---------------------------------------------------------------


@serve
@pytest.mark.parametrize(
    "kwargs, exc, param",
    [
        ({"model": "whisper-large-v9"}, openai.NotFoundError, "model"),
        ({"response_format": "xml"}, openai.BadRequestError, "response_format"),
        ({"timestamp_granularities": ["char"]}, openai.BadRequestError, "timestamp_granularities"),
        (
            {"timestamp_granularities": ["word"], "response_format": "json"},
            openai.BadRequestError,
            "timestamp_granularities",
        ),
        ({"temperature": 1.5}, openai.BadRequestError, "temperature"),
        ({"language": "xx-not-a-language"}, openai.BadRequestError, "language"),
    ],
    ids=[
        "unknown-model",
        "bad-format",
        "bad-granularity",
        "words-need-verbose",
        "temperature",
        "language",
    ],
)
def test_transcription_bad_params(oai, jfk, kwargs, exc, param):
    with pytest.raises(exc) as info:
        transcribe(oai, jfk, **kwargs)
    error = info.value.body
    assert error["param"] == param
    assert error["message"] and error["type"] == "invalid_request_error"


@serve
def test_transcription_unprocessable_audio(oai):
    with pytest.raises(openai.UnprocessableEntityError) as info:
        oai.audio.transcriptions.create(
            model="whisper-1", file=("notes.wav", b"not audio at all\n" * 50)
        )
    assert info.value.body["code"] == "unsupported_media"
    with pytest.raises(openai.UnprocessableEntityError):
        oai.audio.transcriptions.create(model="whisper-1", file=("empty.wav", b""))


@serve
def test_openai_error_shape_over_raw_http(service, auth):
    url = f"{service.url}/v1/audio/transcriptions"
    missing_file = httpx.post(url, data={"model": "whisper-1"}, headers=auth, timeout=60)
    assert missing_file.status_code == 400
    assert missing_file.json() == {
        "error": {
            "message": "Missing required parameter: 'file'.",
            "type": "invalid_request_error",
            "param": "file",
            "code": "missing_required_parameter",
        }
    }
    bad_type = httpx.post(
        url,
        data={"model": "whisper-1", "temperature": "warm"},
        files={"file": ("a.flac", b"x")},
        headers=auth,
        timeout=60,
    )
    assert bad_type.status_code == 400
    assert set(bad_type.json()["error"]) == {"message", "type", "param", "code"}
    assert bad_type.json()["error"]["param"] == "temperature"
    big = httpx.post(
        url,
        data={"model": "whisper-1"},
        files={"file": ("big.wav", b"\0" * (9 * 1024 * 1024))},
        headers=auth,
        timeout=60,
    )
    assert big.status_code == 413
    assert big.json()["error"]["code"] == "file_too_large"
    # The rest of the API keeps the project's own error shape.
    core = httpx.post(
        f"{service.url}/v1/summarize", data={"language": "en"}, headers=auth, timeout=60
    )
    assert core.status_code == 422
    assert set(core.json()["error"]) == {"code", "message"}


@serve
def test_openapi_lists_openai_routes(service):
    paths = httpx.get(f"{service.url}/openapi.json", timeout=30).json()["paths"]
    for path in ("/v1/audio/transcriptions", "/v1/chat/completions", "/v1/models"):
        assert path in paths


@serve
def test_api_key_required(service):
    bad = OpenAI(base_url=service.url + "/v1", api_key="aipp_wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError) as info:
        bad.models.list()
    assert info.value.body["code"] == "invalid_api_key"
    assert info.value.body["type"] == "invalid_request_error"
    resp = httpx.post(f"{service.url}/v1/chat/completions", json={}, timeout=60)
    assert resp.status_code == 401  # auth is checked before the body
    assert set(resp.json()["error"]) == {"message", "type", "param", "code"}
    assert resp.json()["error"]["code"] == "missing_api_key"


# --- Chat completions ------------------------------------------------------------------


MESSAGES = [
    {"role": "system", "content": "You are a terse assistant."},
    {"role": "user", "content": "Name the capital of France in one word."},
]


@serve
def test_chat_completion(oai):
    resp = oai.chat.completions.create(model=LLM, messages=MESSAGES, max_tokens=8, temperature=0)
    assert resp.object == "chat.completion" and resp.model == LLM
    choice = resp.choices[0]
    assert choice.message.role == "assistant"
    assert "paris" in choice.message.content.lower()
    assert choice.finish_reason in {"stop", "length"}
    assert resp.usage.prompt_tokens > 10 and 0 < resp.usage.completion_tokens <= 8
    assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens


@serve
def test_chat_completion_stream(oai):
    stream = oai.chat.completions.create(
        model=LLM,
        messages=MESSAGES,
        max_completion_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert "paris" in text.lower()
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert finishes[-1] in {"stop", "length"} and not any(finishes[:-1])
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0


@serve
def test_chat_stream_raw_sse_ends_with_done(service, auth):
    body = {"model": LLM, "messages": MESSAGES, "max_tokens": 4, "temperature": 0, "stream": True}
    with httpx.stream(
        "POST", f"{service.url}/v1/chat/completions", json=body, headers=auth, timeout=120
    ) as resp:
        assert resp.status_code == 200
        assert resp.headers["content-type"].startswith("text/event-stream")
        lines = [ln for ln in resp.iter_lines() if ln]
    assert all(ln.startswith("data: ") for ln in lines)
    assert lines[-1] == "data: [DONE]"
    first = json.loads(lines[0][6:])
    assert first["choices"][0]["delta"]["role"] == "assistant"


@serve
def test_chat_json_schema(oai):
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "country": {"type": "string"}},
        "required": ["city", "country"],
        "additionalProperties": False,
    }
    resp = oai.chat.completions.create(
        model=LLM,
        temperature=0,
        max_tokens=64,
        messages=[{"role": "user", "content": "Give the capital of France as JSON."}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "capital", "schema": schema, "strict": True},
        },
    )
    data = json.loads(resp.choices[0].message.content)
    assert set(data) == {"city", "country"}
    obj = oai.chat.completions.create(
        model=LLM,
        temperature=0,
        max_tokens=48,
        response_format={"type": "json_object"},
        messages=[{"role": "user", "content": "Reply with a JSON object with key 'ok'."}],
    )
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


@serve
@pytest.mark.parametrize(
    "kwargs, exc, param",
    [
        ({"messages": []}, openai.BadRequestError, "messages"),
        ({"max_tokens": 0}, openai.BadRequestError, "max_tokens"),
        ({"max_tokens": 1_000_000}, openai.BadRequestError, "max_tokens"),
        ({"max_completion_tokens": -5}, openai.BadRequestError, "max_completion_tokens"),
        ({"model": "gpt-4o"}, openai.NotFoundError, "model"),
        (
            {"messages": [{"role": "robot", "content": "hi"}]},
            openai.BadRequestError,
            "messages.0.role",
        ),
        ({"temperature": 3}, openai.BadRequestError, "temperature"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            openai.BadRequestError,
            "response_format.json_schema",
        ),
    ],
    ids=[
        "empty-messages",
        "max-tokens-0",
        "max-tokens-huge",
        "max-completion-negative",
        "unknown-model",
        "bad-role",
        "temperature",
        "schema-missing",
    ],
)
def test_chat_bad_params(oai, kwargs, exc, param):
    args = {"model": LLM, "messages": MESSAGES, "max_tokens": 4, **kwargs}
    if "max_completion_tokens" in kwargs:
        args.pop("max_tokens")
    with pytest.raises(exc) as info:
        oai.chat.completions.create(**args)
    assert info.value.body["param"] == param
    assert info.value.body["type"] == "invalid_request_error"


# --- Error conversion with a router-level dependency (no service needed) ----------------


@pytest.mark.parametrize(
    "status, code, expected_type",
    [(401, "invalid_api_key", "invalid_request_error"), (429, "rate_limited", "requests")],
)
def test_dependency_errors_are_openai_shaped(status, code, expected_type):
    from fastapi import Depends, FastAPI
    from fastapi.testclient import TestClient

    from app.api import openai as openai_api
    from app.api.auth import Principal
    from app.api.deps import principal
    from app.api.errors import APIError, install_error_handlers

    def guard():
        raise APIError(status, code, "refused", headers={"Retry-After": "3"})

    app = FastAPI()
    install_error_handlers(app)
    app.include_router(openai_api.router, dependencies=[Depends(guard)])
    app.dependency_overrides[principal] = lambda: Principal("t", "t")
    resp = TestClient(app).get("/v1/models")
    assert resp.status_code == status
    assert resp.headers["retry-after"] == "3"
    assert resp.json() == {
        "error": {"message": "refused", "type": expected_type, "param": None, "code": code}
    }
