"""PII redaction (issue 25): the engine on its own, then the running service.

The engine is the real spaCy model and the real checksum libraries. End to end, a real
phone call (tests/data/phone_call.flac: two callers say their first names) goes through
the task path with redacted audio, and a support call transcript with planted entities
(tests/data/pii/support_call.txt) through the transcript upload path; none of what was
planted may survive anywhere the service puts text: the result, exports, search, the
Redis cache, the webhook body, the logs, or the stored upload.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from app.core.pii_terms import MASK, PiiEntity, RedactMode
from app.core.schemas import Segment, Transcript, Word
from app.core.task_vocabulary import ProcessingOptions
from app.privacy.audio import PAD_S, TONE_HZ, Cover, cover_spans
from app.privacy.detect import digit_runs
from app.privacy.redact import Redactor, redact_transcript
from app.speech.audio import SAMPLE_RATE, decode
from app.speech.subtitles import to_srt, to_vtt
from app.tasks.result_cache import result_key
from tests.conftest import DATA, make_key
from tests.servers import LocalHTTPServer
from tests.test_tasks_api import wait_done

PHONE_CALL = DATA / "phone_call.flac"
SUPPORT_CALL = DATA / "pii" / "support_call.txt"

#: What support_call.txt plants, in the forms a leak would take.
PLANTED_TEXT = [
    "maria",
    "gonzalez",
    "4111 1111 1111 1111",
    "4111111111111111",
    "march 3rd, 1985",
    "four one five, five five five",
    "maria.gonzalez@example.com",
    "de89 3704 0044 0532 0130 00",
    "123-45-6789",
    "1200 market street",
    "94103",
]
#: The first names the two callers of phone_call.flac say.
PLANTED_SPEECH = ["diane", "sheila"]


@pytest.fixture(scope="module")
def redactor() -> Redactor:
    return Redactor()


# --- the engine ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "entity", "value"),
    [
        ("My name is Maria Gonzalez, thanks.", PiiEntity.PERSON, "Maria Gonzalez"),
        ("Call me at 415-555-0132 tomorrow.", PiiEntity.PHONE_NUMBER, "415-555-0132"),
        ("Reach us on +44 20 7946 0958 please.", PiiEntity.PHONE_NUMBER, "+44 20 7946 0958"),
        (
            "It's four one five, five five five, zero one three two.",
            PiiEntity.PHONE_NUMBER,
            "four one five, five five five, zero one three two",
        ),
        ("Write to maria.g@example.com today.", PiiEntity.EMAIL_ADDRESS, "maria.g@example.com"),
        (
            "It is maria dot g at example dot com.",
            PiiEntity.EMAIL_ADDRESS,
            "maria dot g at example dot com",
        ),
        ("The card is 4111 1111 1111 1111.", PiiEntity.CREDIT_CARD, "4111 1111 1111 1111"),
        ("My SSN is 123-45-6789.", PiiEntity.US_SSN, "123-45-6789"),
        (
            "My social is one two three, four five, six seven eight nine.",
            PiiEntity.US_SSN,
            "one two three, four five, six seven eight nine",
        ),
        ("Pay to DE89 3704 0044 0532 0130 00 now.", PiiEntity.IBAN, "DE89 3704 0044 0532 0130 00"),
        (
            "Send it to 1200 Market Street, San Francisco, CA 94103.",
            PiiEntity.ADDRESS,
            "1200 Market Street, San Francisco, CA 94103",
        ),
        ("I was born on March 3rd, 1985.", PiiEntity.DATE_OF_BIRTH, "March 3rd, 1985"),
    ],
)
def test_each_entity_is_found_and_labelled(redactor, text, entity, value):
    spans = redactor.find(text)
    assert [(s.entity, s.text) for s in spans] == [(entity, value)]
    out = redactor.text(text)
    assert f"[{entity.value}]" in out and value not in out


@pytest.mark.parametrize(
    "text",
    [
        "The card 4111 1111 1111 1112 fails the check.",  # not a card (Luhn)
        "The account DE89 3704 0044 0532 0130 01 fails its checksum.",  # not an IBAN
        "We meet on March 3rd, 1985 was a good year.",  # a date, nobody's birth
        "We have two or three ideas and one plan for 2024, in room 12.",
        "Oh, one more thing: five people joined at 10.",
    ],
)
def test_what_is_not_personal_data_stays(redactor, text):
    assert redactor.find(text) == []
    assert redactor.text(text) == text


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # Names the small spaCy model misses or mislabels (it took "københavn k." for
        # the person here), and addresses outside the US street pattern: the PII
        # classifier (Rampart, app/privacy/ner_model.py) finds them.
        (
            "okay so eva kleist lives at 255 hersnapvej 18, københavn k.",
            [("eva kleist", "PERSON"), ("255 hersnapvej 18, københavn k", "ADDRESS")],
        ),
        ("Warrane, can you take the action item?", [("Warrane", "PERSON")]),
        (
            "Elínborg Guðmundsdóttir owns the budget review.",
            [("Elínborg Guðmundsdóttir", "PERSON")],
        ),
        (
            "Send the contract to 7 Calle Mayor, Madrid before the call.",
            [("7 Calle Mayor, Madrid", "ADDRESS")],
        ),
        # A city alone is no address.
        ("I flew to Denver and then to Boston.", []),
    ],
)
def test_the_pii_classifier_finds_what_spacy_misses(redactor, text, expected):
    assert [(s.text, s.entity.value) for s in redactor.find(text)] == expected


def test_the_pii_classifier_reads_long_text_in_windows():
    from app.privacy.detect import load_detector
    from app.privacy.ner_model import WINDOW_CHARS

    tagger = load_detector().tagger
    assert tagger is not None  # the default setting ships it
    filler = "We went over the schedule again and agreed on the plan. " * 12
    text = filler + "Elínborg Guðmundsdóttir owns the review. " + filler
    assert len(text) > 2 * WINDOW_CHARS
    tagged = tagger.tag(text)
    at = text.index("Elínborg")
    assert {(t.start, t.kind) for t in tagged} >= {(at, "GIVEN_NAME")}
    assert all(text[t.start : t.end].strip() == text[t.start : t.end] for t in tagged)


def test_spoken_digits_as_whisper_writes_them():
    runs = digit_runs("four one five, five five five, double two three four. Oh, nine")
    assert [r.digits for r in runs] == ["4155552234", "9"]
    assert runs[0].spoken


def test_modes_and_pseudonyms_stay_stable():
    text = "Maria Gonzalez met John Smith. Later Maria called Smith at 415-555-0132."
    assert Redactor(mode=RedactMode.MASK).text(text).count(MASK) == 5
    out = Redactor(mode=RedactMode.PSEUDONYM).text(text)
    assert out == (
        "[PERSON_1] met [PERSON_2]. Later [PERSON_1] called [PERSON_2] at [PHONE_NUMBER_1]."
    )
    only_mail = Redactor(entities=(PiiEntity.EMAIL_ADDRESS,))
    assert only_mail.text("Maria wrote from a@b.org") == "Maria wrote from [EMAIL_ADDRESS]"


def test_speaker_names_are_names_and_roles_are_not():
    pseudo = Redactor(mode=RedactMode.PSEUDONYM)
    assert pseudo.speaker_name("Maria Gonzalez") == "[PERSON_1]"
    assert pseudo.speaker_name("Agent") == "Agent"
    # A mention of the speaker's first name is the same person.
    assert pseudo.text("Thanks, Maria.") == "Thanks, [PERSON_1]."
    assert Redactor().speaker_name("Orie") is None  # shown as "Speaker N"
    assert Redactor().speaker_name("Customer Service") == "Customer Service"


def _segment(i: int, words: list[tuple[str, float, float]]) -> Segment:
    text = "".join(w for w, _, _ in words).strip()
    return Segment(
        id=i,
        start=words[0][1],
        end=words[-1][2],
        text=text,
        words=[Word(word=w, start=a, end=b) for w, a, b in words],
    )


def test_a_transcript_keeps_words_segments_and_subtitles_consistent(redactor):
    # A number spoken across two segments is one number, and its words one span.
    segments = [
        _segment(
            0,
            [(" This", 0.0, 0.2), (" is", 0.2, 0.4), (" Diane", 0.5, 0.9), (" Smith.", 0.9, 1.3)]
            + [(" Call", 1.5, 1.7), (" four", 2.0, 2.2), (" one", 2.2, 2.4), (" five,", 2.4, 2.6)],
        ),
        _segment(
            1,
            [(" five", 3.0, 3.2), (" five", 3.2, 3.4), (" five,", 3.4, 3.6), (" one", 3.6, 3.8)]
            + [(" two", 3.8, 4.0), (" three", 4.0, 4.2), (" four.", 4.2, 4.5)]
            + [(" Thanks", 4.6, 5.0)],
        ),
    ]
    transcript = Transcript(text="", language="en", duration_s=5.0, segments=segments)
    out, times = redact_transcript(transcript, redactor)
    assert out.segments[0].text == "This is [PERSON]. Call [PHONE_NUMBER]"
    words = [w.word for s in out.segments for w in s.words]
    assert words == [" This", " is", " [PERSON].", " Call", " [PHONE_NUMBER]", " Thanks"]
    merged = out.segments[0].words[2]
    assert (merged.start, merged.end) == (0.5, 1.3)
    assert times == [(0.5, 1.3), (2.0, 2.6), (3.0, 4.5)]
    exported = to_srt(out.segments) + to_vtt(out.segments) + out.text
    for planted in ("Diane", "Smith", "four", "five", "three"):
        assert planted not in exported


def test_the_audio_is_toned_over_the_spans_only():
    samples = decode(PHONE_CALL.read_bytes())
    covered, spans = cover_spans(samples, SAMPLE_RATE, [(13.0, 13.3), (13.3, 13.5)], Cover.TONE)
    assert spans == [(13.0 - PAD_S, 13.5 + PAD_S)]
    a, b = int(spans[0][0] * SAMPLE_RATE), int(spans[0][1] * SAMPLE_RATE)
    peak_hz = np.argmax(np.abs(np.fft.rfft(covered[a:b]))) * SAMPLE_RATE / (b - a)
    assert abs(peak_hz - TONE_HZ) < 5
    assert not np.allclose(samples[a:b], covered[a:b])  # there was speech under it
    assert np.array_equal(samples[:a], covered[:a]) and np.array_equal(samples[b:], covered[b:])
    silent, _ = cover_spans(samples, SAMPLE_RATE, [(13.0, 13.3)], Cover.SILENCE)
    assert not silent[int(12.9 * SAMPLE_RATE) : int(13.4 * SAMPLE_RATE)].any()


def test_options_are_canonical_and_part_of_the_cache_key():
    a = ProcessingOptions(redact_pii=True, redact_policy="email_address, PERSON")
    b = ProcessingOptions(redact_pii=True, redact_policy="PERSON,EMAIL_ADDRESS")
    assert a.redact_policy == b.redact_policy == "PERSON,EMAIL_ADDRESS"
    assert ProcessingOptions(redact_pii=True, redact_policy="all").redact_policy is None
    with pytest.raises(ValueError, match="unknown PII entity 'FOO'"):
        ProcessingOptions(redact_policy="FOO")
    models = {"stt": "s", "llm": "l"}
    plain = str(result_key("0" * 64, "t", ProcessingOptions(), models))
    assert str(result_key("0" * 64, "t", a, models)) == str(result_key("0" * 64, "t", b, models))
    assert str(result_key("0" * 64, "t", a, models)) != plain
    mode = ProcessingOptions(
        redact_pii=True, redact_policy="PERSON,EMAIL_ADDRESS", redact_mode="mask"
    )
    assert str(result_key("0" * 64, "t", mode, models)) != str(result_key("0" * 64, "t", a, models))


# --- the running service --------------------------------------------------------------------


def _leaks(blob: str | bytes, planted: list[str]) -> list[str]:
    """The planted values found as whole tokens: a log full of hex ids and timings holds
    "94103" inside "0.941037" or "c94103a" by chance, which is not the ZIP code leaking."""
    text = blob.decode("utf-8", "replace") if isinstance(blob, bytes) else blob
    text = text.lower()
    return [p for p in planted if re.search(rf"(?<![\w.]){re.escape(p)}(?!\w)", text)]


def _redis_values(url: str) -> dict[bytes, bytes]:
    """Every Redis key with its value(s) as bytes."""
    import redis

    r = redis.Redis.from_url(url)
    out: dict[bytes, bytes] = {}
    for key in r.scan_iter(count=1000):
        kind = r.type(key).decode()
        if kind == "string":
            values = [r.get(key) or b""]
        elif kind == "hash":
            values = [b"%s=%s" % kv for kv in r.hgetall(key).items()]
        elif kind == "list":
            values = r.lrange(key, 0, -1)
        elif kind == "set":
            values = sorted(r.smembers(key))
        elif kind == "zset":
            values = r.zrange(key, 0, -1)
        elif kind == "stream":
            values = [
                json.dumps({k.decode(): v.decode() for k, v in f.items()}).encode()
                for _, f in r.xrange(key)
            ]
        else:
            values = []
        out[key] = b"\n".join(values)
    return out


def _redis_dump(url: str, before: dict[bytes, bytes] | None = None) -> str:
    """What Redis holds, less the keys that were there, unchanged, ``before`` this test
    (the shared service also ran the same phone call unredacted for other tests)."""
    before = before or {}
    values = [v for k, v in _redis_values(url).items() if before.get(k) != v]
    return b"\n".join(values).decode("utf-8", "replace")


def _log_text(service, ray_cluster) -> str:
    files = [service.log, *Path(ray_cluster.temp_dir).glob("session_*/logs/**/*")]
    texts = []
    for path in files:
        if path.is_file() and path.suffix in (".log", ".out", ".err"):
            texts.append(path.read_bytes().decode("utf-8", "replace"))
    return "\n".join(texts)


def _everything_shown(client: httpx.Client, task: dict) -> str:
    """The task as GET returns it, and every export of its transcript."""
    parts = [json.dumps(task)]
    for fmt in ("txt", "srt", "vtt", "json"):
        resp = client.get(f"/v1/tasks/{task['id']}/transcript", params={"format": fmt})
        parts.append(resp.text)
    return "\n".join(parts)


@pytest.mark.serve
@pytest.mark.timeout(600)
def test_nothing_planted_survives_anywhere(service, ray_cluster, service_redis):
    tenant = f"pii-{time.monotonic_ns()}"
    client = httpx.Client(
        base_url=service.url,
        timeout=600,
        headers={"Authorization": f"Bearer {make_key(service, tenant)}"},
    )
    audio = PHONE_CALL.read_bytes()
    with client, LocalHTTPServer(lambda req: (200, {}, b"ok")) as receiver:
        hook = f"{receiver.url}/hook"
        redis_before = _redis_values(service_redis.url)
        spoken = client.post(
            "/v1/tasks",
            files={"file": ("phone_call.flac", audio)},
            data={"redact_pii": "true", "redact_audio": "true", "webhook_url": hook},
        )
        typed = client.post(
            "/v1/tasks",
            files={"transcript": ("support_call.txt", SUPPORT_CALL.read_bytes(), "text/plain")},
            data={"redact_pii": "true", "redact_mode": "pseudonym", "webhook_url": hook},
        )
        assert spoken.status_code == 202 and typed.status_code == 202, (spoken.text, typed.text)
        spoken_task = wait_done(client, spoken.json()["id"], timeout_s=500)
        typed_task = wait_done(client, typed.json()["id"], timeout_s=500)
        deadline = time.monotonic() + 60
        while len(receiver.requests) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)
        webhooks = b"\n".join(r.body for r in receiver.requests)
        assert spoken_task["status"] == typed_task["status"] == "succeeded", (
            spoken_task,
            typed_task,
        )

        # The redaction happened, and said what it did (never the values).
        typed_result = typed_task["result"]
        found = typed_result["redaction"]["found"]
        assert set(found) == {e.value for e in PiiEntity}, found
        assert "[PERSON_1]" in typed_result["transcript"]["text"]
        assert typed_result["summary"]["summary"].strip()
        spoken_result = spoken_task["result"]
        assert spoken_result["redaction"]["found"]["PERSON"] >= 2
        assert spoken_result["redaction"]["audio"] == "tone"
        assert "[PERSON]" in spoken_result["transcript"]["text"]

        # Nowhere: result (transcript, words, summary, evidence), exports, search, webhook.
        shown = {
            "typed": _everything_shown(client, typed_task),
            "spoken": _everything_shown(client, spoken_task),
        }
        assert _leaks(shown["typed"], PLANTED_TEXT) == []
        assert _leaks(shown["spoken"], PLANTED_SPEECH) == []
        for word in ("maria", "gonzalez", "diane", "sheila", "94103"):
            assert client.get("/v1/search", params={"q": word}).json()["data"] == [], word
        assert client.get("/v1/search", params={"q": "card"}).json()["data"]  # indexed
        assert len(receiver.requests) == 2
        assert _leaks(webhooks, PLANTED_TEXT + PLANTED_SPEECH) == []
        assert (
            _leaks(_redis_dump(service_redis.url, redis_before), PLANTED_TEXT + PLANTED_SPEECH)
            == []
        )
        assert _leaks(_log_text(service, ray_cluster), PLANTED_TEXT) == []

        # The stored audio is the redacted copy, toned where the names were said.
        stored = client.get(f"/v1/tasks/{spoken_task['id']}/audio")
        assert stored.status_code == 200
        redacted, rate = sf.read(io.BytesIO(stored.content), dtype="float32")
        original = decode(audio)
        assert rate == SAMPLE_RATE and len(redacted) == len(original)
        spans = spoken_result["redaction"]["audio_spans"]
        names_at = [
            w["start"]
            for s in spoken_result["transcript"]["segments"]
            for w in s["words"] or []
            if w["word"].strip().startswith("[PERSON]")
        ]
        assert len(names_at) >= 2
        for start in names_at:
            a, b = int((start + 0.02) * SAMPLE_RATE), int((start + 0.12) * SAMPLE_RATE)
            piece = redacted[a:b]
            peak_hz = np.argmax(np.abs(np.fft.rfft(piece))) * SAMPLE_RATE / len(piece)
            assert abs(peak_hz - TONE_HZ) < 20, (start, peak_hz)
        assert all(any(s <= t <= e for s, e in spans) for t in names_at)
        # Away from the spans the audio is the original (16-bit rounding aside).
        keep = np.ones(len(original), bool)
        for s, e in spans:
            keep[int((s - PAD_S) * SAMPLE_RATE) : int((e + PAD_S) * SAMPLE_RATE) + 1] = False
        assert np.abs(redacted[keep] - original[keep]).max() < 1e-3

    # The stored copy is a blob of the tenant's own; the unredacted uploads are gone
    # from its blob store (the policy keeps no original).
    copy_sha = hashlib.sha256(stored.content).hexdigest()
    copies = [p for p in (service.data_dir / "blobs").rglob(copy_sha) if p.is_file()]
    assert len(copies) == 1, copies
    namespace = copies[0].parents[2]  # <blobs>/<tenant>/ab/cd/<sha>
    names = {p.name for p in namespace.rglob("*") if p.is_file()}
    assert names == {copy_sha}


@pytest.mark.serve
def test_the_openai_route_redacts_on_request(client):
    audio = PHONE_CALL.read_bytes()
    form = {"model": "whisper-1", "response_format": "verbose_json"}
    form["timestamp_granularities[]"] = "word"
    plain = client.post("/v1/audio/transcriptions", files={"file": ("a.flac", audio)}, data=form)
    assert plain.status_code == 200, plain.text
    assert "Diane" in plain.text  # the names are there to be found
    redacted = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", audio)},
        data={**form, "redact_pii": "true"},
    )
    assert redacted.status_code == 200, redacted.text
    assert _leaks(redacted.text, PLANTED_SPEECH) == []
    body = redacted.json()
    assert "[PERSON]" in body["text"]
    assert any(w["word"].strip().startswith("[PERSON]") for w in body["words"])
    bad = client.post(
        "/v1/audio/transcriptions",
        files={"file": ("a.flac", audio)},
        data={**form, "redact_pii": "true", "redact_policy": "SHOE_SIZE"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "redact_policy"


@pytest.mark.serve
def test_the_translation_route_redacts_on_request(client):
    """The English text a translation returns is redacted like a transcript."""
    audio = PHONE_CALL.read_bytes()
    form = {"model": "whisper-1", "response_format": "verbose_json"}
    plain = client.post("/v1/audio/translations", files={"file": ("a.flac", audio)}, data=form)
    assert plain.status_code == 200, plain.text
    assert _leaks(plain.text, PLANTED_SPEECH), plain.text  # the names are there to be found
    redacted = client.post(
        "/v1/audio/translations",
        files={"file": ("a.flac", audio)},
        data={**form, "redact_pii": "true", "redact_mode": "mask"},
    )
    assert redacted.status_code == 200, redacted.text
    body = redacted.json()
    assert _leaks(redacted.text, PLANTED_SPEECH) == []
    assert body["segments"] and all(s["text"] in body["text"] for s in body["segments"][:1])
    bad = client.post(
        "/v1/audio/translations",
        files={"file": ("a.flac", audio)},
        data={**form, "redact_pii": "true", "redact_mode": "shout"},
    )
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "redact_mode"
