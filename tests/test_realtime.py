"""Live transcription: the official ``openai`` SDK's realtime client and ``stream=True``
transcription against `aipp serve`, a session turning into a task, and bad input.

The WebSocket sessions stream real speech (the JFK clip) faster than real time; the
assertions are on what comes back (events, words, the task), never on timing.
"""

from __future__ import annotations

import base64
import json
import re
import time

import httpx
import pytest
from openai import OpenAI
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from app.speech.audio import decode
from app.speech.streaming import LocalAgreement, UtteranceCutter, VadConfig
from tests.conftest import DATA, make_key

serve = pytest.mark.serve

COMPLETED = "conversation.item.input_audio_transcription.completed"
DELTA = "conversation.item.input_audio_transcription.delta"


def words(text: str) -> list[str]:
    return re.sub(r"[^a-z ]+", " ", text.lower()).split()


@pytest.fixture(scope="module")
def rt_key(service) -> str:
    """Its own tenant: its own rate-limit bucket and task list."""
    return make_key(service, "realtime")


@pytest.fixture(scope="module")
def jfk_pcm24() -> bytes:
    """The JFK clip as 24 kHz 16-bit mono PCM (OpenAI's realtime format)."""
    from scipy.signal import resample_poly

    pcm = resample_poly(decode((DATA / "jfk.flac").read_bytes()), 3, 2)
    return (pcm.clip(-1, 1) * 32767).astype("<i2").tobytes()


def ws_url(service, query: str = "intent=transcription") -> str:
    return service.url.replace("http://", "ws://") + "/v1/realtime?" + query


def chunks(pcm: bytes, rate: int, ms: int = 100):
    step = rate * 2 * ms // 1000
    for i in range(0, len(pcm), step):
        yield base64.b64encode(pcm[i : i + step]).decode()


# --- the policy, alone (no service) ---------------------------------------------------


def test_local_agreement_commits_only_what_two_decodes_agree_on():
    la = LocalAgreement()
    assert la.update(["And", "so", "my"]) == []  # one decode: nothing is sure yet
    assert la.update(["And", "so,", "my", "fellow"]) == ["And", "so,", "my"]
    # A decode that rewrites committed words commits nothing and changes nothing.
    assert la.update(["Ann", "so", "my", "fellow", "Americans"]) == []
    assert la.committed == ["And", "so,", "my"]
    # The final decode only appends after the committed words.
    assert la.finish(["And", "so", "my", "fellow", "Americans."]) == ["fellow", "Americans."]
    assert la.text == "And so, my fellow Americans."


def test_cutter_cuts_utterances_at_pauses_and_bounds_them():
    import numpy as np

    cutter = UtteranceCutter(VadConfig(silence_ms=320, max_utterance_s=2.0))
    frame = np.zeros(512, np.float32)
    probs = [0.0] * 5 + [0.9] * 20 + [0.0] * 12 + [0.9] * 100
    events = [ev for p in probs for ev in cutter.push(frame, p)]
    kinds = [type(e).__name__ for e in events]
    assert kinds[:3] == ["SpeechStarted", "Pause", "Utterance"] and events[2].reason == "silence"
    # The pause announced the utterance's final audio before the end was certain.
    assert np.array_equal(events[1].audio, events[2].audio)
    assert events[1].end_ms == events[2].end_ms == (5 + 20) * 32
    # Speech without a pause is cut at the maximum length, so the buffer stays bounded.
    assert any(getattr(e, "reason", "") == "max_length" for e in events[2:])
    assert all(e.audio.shape[0] <= 2.0 * 16000 + 512 for e in events if hasattr(e, "audio"))


def test_resampler_has_no_seams_between_chunks():
    import numpy as np
    from scipy.signal import resample_poly

    from app.speech.streaming import Resampler

    x24 = resample_poly(decode((DATA / "jfk.flac").read_bytes()), 3, 2).astype(np.float32)
    r = Resampler(24000)
    out = np.concatenate([r(x24[i : i + 2400]) for i in range(0, len(x24), 2400)])
    whole = resample_poly(x24, 2, 3)
    assert len(whole) - len(out) <= 60  # 2.5 ms held back at the end
    assert np.abs(out - whole[: len(out)]).max() < 1e-4  # the same as resampling it whole


def test_without_keys_only_this_origin_may_open_a_session():
    from starlette.websockets import WebSocket

    from app.api.realtime.routes import _open_mode_refusal
    from app.core.settings import Settings

    def refusal(**headers: str):
        scope = {
            "type": "websocket",
            "scheme": "ws",
            "path": "/v1/realtime",
            "query_string": b"",
            "server": ("127.0.0.1", 8000),
            "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
        }
        found = _open_mode_refusal(WebSocket(scope, None, None), Settings())
        return found.code if found else None

    assert refusal(host="127.0.0.1:8000") is None  # an SDK: no Origin
    assert refusal(host="127.0.0.1:8000", origin="http://127.0.0.1:8000") is None
    assert refusal(host="127.0.0.1:8000", origin="http://evil.example") == "cross_site_request"
    assert refusal(host="127.0.0.1:8000", origin="http://127.0.0.1:9999") == "cross_site_request"
    assert refusal(host="evil.example:8000") == "untrusted_host"  # DNS rebinding


def test_session_update_shapes_and_refusals():
    from app.api.realtime.protocol import ProtocolError, SessionConfig

    cfg = SessionConfig()
    cfg.apply(
        {
            "type": "session.update",
            "session": {
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 16000},
                        "noise_reduction": {"type": "near_field"},
                        "turn_detection": None,
                    }
                },
            },
        }
    )
    assert (cfg.rate, cfg.near_field, cfg.vad) == (16000, True, False)
    beta = SessionConfig()
    beta.apply(
        {
            "type": "transcription_session.update",
            "session": {
                "input_audio_format": "pcm16",
                "input_audio_transcription": {"language": "en"},
            },
        }
    )
    assert (
        beta.beta
        and beta.language == "en"
        and beta.session_event("updated")["type"] == ("transcription_session.updated")
    )
    for bad in ({"type": "audio/pcmu"}, {"type": "audio/pcm", "rate": 44100}):
        with pytest.raises(ProtocolError) as err:
            cfg.apply({"type": "session.update", "session": {"audio": {"input": {"format": bad}}}})
        assert err.value.code == "unsupported_audio_format" and err.value.close == 1003


# --- the service ----------------------------------------------------------------------


@serve
def test_openai_sdk_realtime_transcribes_jfk_and_the_session_becomes_a_task(
    service, rt_key, jfk_pcm24
):
    client = OpenAI(base_url=service.url + "/v1", api_key=rt_key, max_retries=0)
    events: list = []
    with client.realtime.connect(model="gpt-4o-transcribe") as conn:
        first = conn.recv()
        assert first.type == "session.created"
        conn.session.update(
            session={
                "type": "transcription",
                "audio": {
                    "input": {
                        "format": {"type": "audio/pcm", "rate": 24000},
                        "transcription": {"model": "whisper-1", "language": "en"},
                        "turn_detection": {"type": "server_vad", "silence_duration_ms": 500},
                    }
                },
            }
        )
        for b64 in chunks(jfk_pcm24, 24000):
            conn.input_audio_buffer.append(audio=b64)
            time.sleep(0.02)  # 100 ms of audio every 20 ms: five times real time
        silence = base64.b64encode(b"\0" * 24000 * 2).decode()
        conn.input_audio_buffer.append(audio=silence)
        conn.send({"type": "session.finish"})
        while True:
            ev = conn.recv()
            events.append(ev)
            if ev.type == "session.finished":
                break
    kinds = [e.type for e in events]
    assert "session.updated" in kinds
    assert "input_audio_buffer.speech_started" in kinds
    assert "input_audio_buffer.committed" in kinds
    completed = [e for e in events if e.type == COMPLETED]
    deltas = [e for e in events if e.type == DELTA]
    assert completed and deltas
    # The deltas of each item add up to its completed transcript (committed words never change).
    for c in completed:
        joined = "".join(d.delta for d in deltas if d.item_id == c.item_id)
        assert joined == c.transcript
        assert c.audio_start_ms < c.audio_end_ms
    heard = words(" ".join(c.transcript for c in completed))
    assert "country" in heard and "americans" in heard and "ask" in heard
    finished = events[-1]
    assert finished.task_id, finished.error
    task = _wait_task(service, rt_key, finished.task_id)
    assert task["status"] == "succeeded"
    audio = httpx.get(
        f"{service.url}/v1/tasks/{finished.task_id}/audio",
        headers={"Authorization": f"Bearer {rt_key}"},
    )
    assert audio.status_code == 200 and audio.content[:4] == b"RIFF"
    assert "country" in words(json.dumps(task["result"]))


def _wait_task(service, key: str, task_id: str, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    headers = {"Authorization": f"Bearer {key}"}
    while time.monotonic() < deadline:
        task = httpx.get(f"{service.url}/v1/tasks/{task_id}", headers=headers).json()
        if task["status"] in ("succeeded", "failed", "canceled"):
            return task
        time.sleep(1)
    raise AssertionError(f"task {task_id} did not finish: {task}")


def _live_tasks(service, key: str) -> list[dict]:
    r = httpx.get(
        f"{service.url}/v1/tasks", params={"limit": 100}, headers={"Authorization": f"Bearer {key}"}
    )
    r.raise_for_status()
    return r.json()["data"]


@serve
def test_abrupt_disconnect_still_yields_a_task_with_the_audio(service, jfk_pcm24):
    key = make_key(service, "realtime-abrupt")
    ws = connect(ws_url(service), additional_headers={"Authorization": f"Bearer {key}"})
    assert json.loads(ws.recv())["type"] == "session.created"
    sent = jfk_pcm24[: 24000 * 2 * 5]  # five seconds, then the connection just drops
    for b64 in chunks(sent, 24000):
        ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": b64}))
    # Events are handled in order: the answer to an update means all five seconds arrived
    # (the proxy may drop messages still in flight when the connection drops).
    ws.send(json.dumps({"type": "session.update", "session": {"type": "transcription"}}))
    while json.loads(ws.recv(timeout=60))["type"] != "session.updated":
        pass
    ws.socket.close()  # no close frame: an abrupt disconnect
    deadline = time.monotonic() + 120
    while not (tasks := _live_tasks(service, key)) and time.monotonic() < deadline:
        time.sleep(1)
    assert len(tasks) == 1
    assert tasks[0]["source"] == "live" and tasks[0]["audio"]["filename"].startswith("live-")
    audio = httpx.get(
        f"{service.url}/v1/tasks/{tasks[0]['id']}/audio",
        headers={"Authorization": f"Bearer {key}"},
    )
    assert audio.status_code == 200
    samples = (len(audio.content) - 44) // 2  # 16 kHz 16-bit WAV
    assert abs(samples / 16000 - 5.0) < 0.2


def _refused(ws) -> tuple[dict, int | None]:
    """The error event, and the close code that follows it."""
    error = None
    try:
        while True:
            ev = json.loads(ws.recv(timeout=60))
            if ev["type"] == "error":
                error = ev["error"]
    except ConnectionClosed as exc:
        assert error is not None, "closed without an error event"
        return error, exc.rcvd.code if exc.rcvd else None


@serve
@pytest.mark.parametrize(
    ("message", "code", "close"),
    [
        ("not json", "invalid_json", 1007),
        (json.dumps({"type": "response.create"}), "unknown_event", 1008),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "AAE"}), "invalid_audio", 1007),
        (json.dumps({"type": "input_audio_buffer.append", "audio": "A" * 1_500_000}), None, 1009),
        (
            json.dumps(
                {
                    "type": "session.update",
                    "session": {
                        "type": "transcription",
                        "audio": {"input": {"format": {"type": "audio/pcm", "rate": 8000}}},
                    },
                }
            ),
            "unsupported_audio_format",
            1003,
        ),
    ],
    ids=["non-json", "unknown-event", "bad-base64", "oversize", "wrong-rate"],
)
def test_bad_input_gets_an_error_event_and_a_close(service, rt_key, message, code, close):
    with connect(ws_url(service), additional_headers={"Authorization": f"Bearer {rt_key}"}) as ws:
        assert json.loads(ws.recv())["type"] == "session.created"
        ws.send(message)
        error, got = _refused(ws)
    assert got == close
    if code:
        assert error["code"] == code
    assert error["message"]
    if code == "unsupported_audio_format":
        assert "16000 or 24000" in error["message"]
    # The replica is fine: the next session opens.
    with connect(ws_url(service), additional_headers={"Authorization": f"Bearer {rt_key}"}) as ws:
        assert json.loads(ws.recv())["type"] == "session.created"


def _open_session(service, headers, timeout_s: float = 30):
    """A session; sessions of earlier tests may take a moment to end and free their slot."""
    deadline = time.monotonic() + timeout_s
    while True:
        ws = connect(ws_url(service), additional_headers=headers)
        ev = json.loads(ws.recv(timeout=30))
        if ev["type"] == "session.created":
            return ws
        ws.close()
        assert ev["error"]["code"] == "too_many_sessions" and time.monotonic() < deadline
        time.sleep(0.5)


@serve
def test_sessions_need_a_key_and_are_limited(service, rt_key):
    with connect(ws_url(service)) as ws:
        error, code = _refused(ws)
    assert error["code"] == "missing_api_key" and code == 1008
    # A browser passes the key as a subprotocol, as with OpenAI.
    with connect(
        ws_url(service), subprotocols=["realtime", f"openai-insecure-api-key.{rt_key}"]
    ) as ws:
        assert json.loads(ws.recv())["type"] == "session.created"
        assert ws.subprotocol == "realtime"
    # Past AIPP_REALTIME_MAX_SESSIONS (4): a clear refusal at once, never a stall.
    headers = {"Authorization": f"Bearer {rt_key}"}
    held = []
    try:
        for _ in range(4):
            held.append(_open_session(service, headers))
        with connect(ws_url(service), additional_headers=headers) as extra:
            error, code = _refused(extra)
        assert error["code"] == "too_many_sessions" and code == 1013
        assert "AIPP_REALTIME_MAX_SESSIONS" in error["message"]
    finally:
        for ws in held:
            ws.close()


@serve
def test_openai_sdk_stream_true_transcription(service, rt_key):
    client = OpenAI(base_url=service.url + "/v1", api_key=rt_key, max_retries=0)
    with (DATA / "jfk.flac").open("rb") as f:
        stream = client.audio.transcriptions.create(model="whisper-1", file=f, stream=True)
        events = list(stream)
    deltas = [e for e in events if e.type == "transcript.text.delta"]
    done = [e for e in events if e.type == "transcript.text.done"]
    assert deltas and len(done) == 1 and events[-1].type == "transcript.text.done"
    assert "".join(d.delta for d in deltas).strip() == done[0].text.strip()
    assert "ask not what your country can do for you" in " ".join(words(done[0].text))
