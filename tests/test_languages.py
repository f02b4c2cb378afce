"""Languages: detection and routing, code-switching, translation, summaries in a language.

Real speech only: ``german_licence.ogg`` is the German half of ``multilingual.mp3``
(faster-whisper's test clip: a software licence read in English, then in German), and
``multilingual.mp3`` itself is the code-switching case. The engine tests load the real
models in this process; the API tests go through `aipp serve` (the session service).
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
from openai import OpenAI

from app.core.settings import Settings
from app.core.task_vocabulary import ProcessingOptions
from app.speech.stt import SttOptions
from tests.conftest import DATA, JFK_PHRASE, make_key

GERMAN = DATA / "german_licence.ogg"
MIXED = DATA / "multilingual.mp3"
JFK = DATA / "jfk.flac"
TERMINAL = {"succeeded", "failed", "cancelled"}
# Words of the German reading that Whisper base gets right (checked by hand on the clip).
GERMAN_WORDS = {"software", "und", "der", "die", "zu", "rechte", "bedingungen"}
ENGLISH_WORDS = {"the", "and", "to", "of", "software"}
ENGLISH_STOPWORDS = {"the", "and", "to", "of", "is", "a", "in", "for", "with", "this", "that"}
GERMAN_STOPWORDS = {"der", "die", "das", "und", "zu", "mit", "ist", "den", "von", "werden"}


def words(text: str) -> set[str]:
    return set(re.findall(r"[a-zäöüß]+", text.lower()))


def normalize(text: str) -> str:
    return " ".join(re.findall(r"[a-zäöüß0-9]+", text.lower()))


# --- The engine: detection and routing, in this process -----------------------------


@pytest.fixture(scope="module")
def router():
    from app.speech.engines import speech_engine_from_settings

    engine = speech_engine_from_settings(Settings())
    assert engine.info()["multilingual_model"] == "whisper-base"
    return engine


def test_german_is_detected_and_transcribed_in_german(router):
    # The shared-pass path (a GPU Transcriber's batch): English first for both files,
    # then the German one re-routed on its own; a file that is not audio fails alone.
    outs = router.transcribe_bytes_many(
        [JFK.read_bytes(), GERMAN.read_bytes(), b"not audio"], SttOptions()
    )
    assert router.can_share_batch(SttOptions()) is router.english.can_share_batch(SttOptions())
    assert outs[0].model == "whisper-tiny.en" and outs[0].transcript.language == "en"
    assert isinstance(outs[2], Exception)
    out = outs[1]
    t = out.transcript
    assert t.language == "de" and t.language_probability > 0.8
    assert t.detection.method == "detected" and t.detection.languages == ["de"]
    assert out.model == "whisper-base"  # not the English-only default
    assert len(GERMAN_WORDS & words(t.text)) >= 5, t.text


def test_english_keeps_the_english_model(router):
    detected = router.transcribe_bytes(JFK.read_bytes(), SttOptions()).transcript
    forced = router.transcribe_bytes(JFK.read_bytes(), SttOptions(language="en"))
    assert detected.language == "en" and detected.detection.model == "whisper-tiny.en"
    # English first: tiny.en was sure of every segment, so the multilingual model never ran.
    assert detected.detection.method == "checked" and detected.detection.detect_s == 0.0
    assert JFK_PHRASE in normalize(detected.text)
    # Forcing the language skips detection altogether: what English-only users can set.
    assert forced.model == "whisper-tiny.en"
    assert forced.transcript.detection.method == "forced"
    assert forced.transcript.detection.detect_s == 0.0
    assert forced.transcript.text == detected.text


def test_code_switching_keeps_both_languages(router):
    t = router.transcribe_bytes(MIXED.read_bytes(), SttOptions()).transcript
    assert t.detection.languages == ["en", "de"]
    assert [w.language for w in t.detection.windows] == ["en", "de"]
    assert t.detection.model == "whisper-base"
    first = " ".join(s.text for s in t.segments if s.end <= 29.5)
    later = " ".join(s.text for s in t.segments if s.start >= 29.5)
    assert "permission is hereby granted" in normalize(first)
    # The German reading is transcribed in German, not dropped or translated.
    assert len(GERMAN_WORDS & words(later)) >= 5, later


# Real readings and interviews of 18-30 s in five more languages, from bench/data/languages
# (sources and licences in its SOURCES.md): the clips bench/languages.py scores.
READINGS = Path(__file__).resolve().parent.parent / "bench" / "data" / "languages"


@pytest.mark.parametrize(
    ("clip", "language"),
    [
        ("whisperct2_ca.ogg", "ca"),
        ("aeneas_es.ogg", "es"),
        ("librivox_udhr_fr.ogg", "fr"),
        ("readalongs_da.ogg", "da"),
    ],
)
def test_each_language_is_detected_on_real_speech(router, clip, language):
    from app.speech.audio import decode
    from app.speech.languages import detect

    found = detect(router.multi.model, decode((READINGS / clip).read_bytes()))
    assert found.language == language, (clip, found.languages, found.probability)


def test_an_unsure_audio_guess_is_settled_by_its_words(router):
    # Whisper base hears this Finnish reading as Latin (0.63), Finnish not in its top
    # four; the words it writes under the Latin token are Finnish to a text identifier.
    from app.speech.audio import decode
    from app.speech.languages import CONFIRM_BELOW, confirmed, detect

    pcm = decode((READINGS / "readalongs_fi.ogg").read_bytes())
    heard = detect(router.multi.model, pcm)
    assert heard.probability < CONFIRM_BELOW, heard
    found = confirmed(router.multi.model, pcm, heard, None)
    assert found.language == "fi", (heard, found)
    assert found.text_check["audio_language"] == heard.language
    assert found.text_check["text_language"] == "fi"
    # The default path (English first) labels the transcript the same, and says why.
    routed = router.transcribe_pcm(pcm, SttOptions())
    assert routed.language == "fi" and routed.detection.model == "whisper-base"
    assert routed.detection.text_check["text_language"] == "fi"
    # A sure guess is not read again.
    german = detect(router.multi.model, decode(GERMAN.read_bytes()))
    assert german.probability >= CONFIRM_BELOW
    assert confirmed(router.multi.model, pcm, german, None) is german


def test_a_fallback_decode_is_doubt_even_when_its_sample_scores_well(router):
    # tiny.en on a French reading, greedy decoding rejected by Whisper's own checks: the
    # fallback sampled "Bye bye." over and over at a log-probability that looks English
    # (one run in four in bench/languages.py). The segment's temperature says it.
    from app.core.schemas import Segment, Transcript
    from app.speech.audio import decode
    from app.speech.languages import doubtful_starts

    pcm = decode((READINGS / "readalongs_fr.ogg").read_bytes())
    sampled = [
        Segment(
            id=i, start=0.3 + i, end=1.3 + i, text="Bye bye.", avg_logprob=-0.5, temperature=0.2
        )
        for i in range(12)
    ]
    greedy = [s.model_copy(update={"temperature": 0.0}) for s in sampled]
    duration = pcm.shape[0] / 16000
    assert doubtful_starts(
        Transcript(text="", language="en", segments=sampled, duration_s=duration), pcm, 3
    )
    # The same segments decoded greedily at that log-probability are English enough.
    covering = greedy + [
        Segment(id=12, start=12.3, end=duration, text="Bye.", avg_logprob=-0.5, temperature=0.0)
    ]
    assert not doubtful_starts(
        Transcript(text="", language="en", segments=covering, duration_s=duration), pcm, 3
    )
    routed = router.transcribe_pcm(pcm, SttOptions())
    assert routed.language == "fr" and routed.detection.model == "whisper-base"


def test_expected_languages_restrict_detection(router):
    from app.speech.audio import decode
    from app.speech.languages import detect

    pcm = decode(GERMAN.read_bytes())
    assert detect(router.multi.model, pcm, ["fr", "de"]).language == "de"
    only_french = detect(router.multi.model, pcm, ["fr"])
    assert only_french.languages == ["fr"]  # the caller's list wins over the audio


def test_language_options_are_validated():
    opts = ProcessingOptions(languages="de, French", summary_language="German", language="DE")
    assert opts.languages == ["de", "fr"] and opts.summary_language == "de"
    assert opts.language == "de"
    with pytest.raises(ValueError, match="not a language"):
        ProcessingOptions(languages="de,klingon")


# --- Through the service: OpenAI routes and tasks -------------------------------------


@pytest.fixture(scope="module")
def oai(service) -> OpenAI:
    key = make_key(service, "languages")
    return OpenAI(base_url=service.url + "/v1", api_key=key, max_retries=0, timeout=600)


def test_openai_verbose_json_reports_the_language(oai):
    result = oai.audio.transcriptions.create(
        model="whisper-1", file=("de.ogg", GERMAN.read_bytes()), response_format="verbose_json"
    )
    assert result.language == "german"
    assert result.model_extra["language_probability"] > 0.8
    assert len(GERMAN_WORDS & words(result.text)) >= 5


def test_openai_translation_with_the_sdk(oai):
    result = oai.audio.translations.create(
        model="whisper-1", file=("de.ogg", GERMAN.read_bytes()), response_format="verbose_json"
    )
    assert result.language == "english"
    assert result.model_extra["spoken_language"] == "german"
    assert len(ENGLISH_WORDS & words(result.text)) >= 4, result.text
    assert not GERMAN_STOPWORDS & words(result.text), result.text
    assert result.segments and result.segments[0].end > result.segments[0].start
    plain = oai.audio.translations.create(model="whisper-1", file=("de.ogg", GERMAN.read_bytes()))
    assert len(ENGLISH_WORDS & words(plain.text)) >= 4, plain.text  # json: {"text"} only
    assert plain.model_extra == {}


def wait_done(client, task_id: str, timeout_s: float = 400) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        body = client.get(f"/v1/tasks/{task_id}").json()
        if body["status"] in TERMINAL:
            return body
        time.sleep(0.5)
    raise AssertionError(f"task {task_id} did not finish: {body}")


def test_task_translates_and_summarizes_in_the_asked_language(client):
    resp = client.post(
        "/v1/tasks",
        files={"file": ("de.ogg", GERMAN.read_bytes())},
        data={"translate_to": "en", "summary_language": "en"},
    )
    assert resp.status_code == 202, resp.text
    body = wait_done(client, resp.json()["id"])
    assert body["status"] == "succeeded", body
    result = body["result"]
    transcript, translation, summary = (
        result["transcript"],
        result["translation"],
        result["summary"],
    )
    assert transcript["language"] == "de" and transcript["detection"]["languages"] == ["de"]
    assert len(GERMAN_WORDS & words(transcript["text"])) >= 5
    assert translation["language"] == "en"
    assert len(ENGLISH_WORDS & words(translation["text"])) >= 4, translation["text"]
    # The summary was asked for in English: written in English, grounded in German.
    assert summary["language"] == "en", summary
    assert len(ENGLISH_STOPWORDS & words(summary["summary"])) >= 2, summary["summary"]
    spoken = normalize(transcript["text"])
    quotes = [e["quote"] for e in summary["key_points_evidence"]]
    assert quotes and all(normalize(q) in spoken for q in quotes), quotes


def test_bad_language_list_is_a_422(client):
    resp = client.post(
        "/v1/tasks", files={"file": ("de.ogg", GERMAN.read_bytes())}, data={"languages": "xx"}
    )
    assert resp.status_code == 422
    assert "languages" in resp.json()["error"]["message"]
