"""Live transcription through ``WS /v1/realtime``: latency, streamed WER, concurrent sessions.

Real recordings are replayed at real time (100 ms appends on the wall clock, 24 kHz
PCM16 as OpenAI clients send) through the WebSocket API of a running ``aipp serve``
with the default model, and we measure:

- utterance end → its ``completed`` event (p50, p95): from the moment the client sent
  the last audio of the utterance's speech (``audio_end_ms`` on the session clock,
  the pause after it not included) to the event's arrival;
- speech → first delta: from ``speech_started`` (sent as the speech arrives) to the
  item's first ``delta``;
- WER of the streamed transcript (the ``completed`` texts joined) and, the same-run
  baseline, of the same audio transcribed in one go (``POST /v1/audio/transcriptions``,
  same service and model), against the human references: the JFK clip and the four
  AMI headset tracks of ``bench/data/ami_remote`` (one speaker each, matched to their
  reference by the one-go transcript);
- sessions at once (1, 2, 4; each replays one 60 s track, level 1 the JFK clip too):
  the most whose end → completed p95 stays ≤ 2 s is "sustained".

Sessions are opened with ``aipp_task: false`` (captions only), so that finished sessions
queue no tasks that would load the machine while later sessions are measured. The AMI
tracks are headset recordings: their sessions say so (``noise_reduction: near_field``),
so the other speakers' bleed on each track is not transcribed as the wearer's words.

    python -m bench.realtime --url http://127.0.0.1:8000 --api-key aipp_...
    python -m bench.realtime            # starts its own service (as the tests do)
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
import websockets

from bench.overhead import DATA, REPO, machine, start_service, stop_service
from bench.quality import edit_distance, wer_words

AMI = REPO / "bench" / "data" / "ami_remote"
JFK_REF = (
    "And so, my fellow Americans, ask not what your country can do for you, "
    "ask what you can do for your country."
)
STEP_MS = 100


def pcm24(path: Path) -> bytes:
    from scipy.signal import resample_poly

    from app.speech.audio import decode

    pcm = decode(path.read_bytes())
    return (np.clip(resample_poly(pcm, 3, 2), -1, 1) * 32767).astype("<i2").tobytes()


async def session(url: str, key: str | None, pcm: bytes, near_field: bool = True) -> dict:
    """Replay ``pcm`` (24 kHz) at real time; the events with their arrival times."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    ws_url = url.replace("http", "ws", 1) + "/v1/realtime?intent=transcription"
    events: list[tuple[float, dict]] = []
    async with websockets.connect(ws_url, additional_headers=headers, max_size=None) as ws:
        first = json.loads(await ws.recv())
        assert first["type"] == "session.created", first
        # Captions only: finished sessions queue no tasks (transcription + summary) that
        # would load the machine while the next sessions are measured.
        update: dict = {"type": "transcription", "aipp_task": False}
        if near_field:  # headset tracks: the neighbours' bleed is not the wearer's speech
            update["audio"] = {"input": {"noise_reduction": {"type": "near_field"}}}
        await ws.send(json.dumps({"type": "session.update", "session": update}))
        assert json.loads(await ws.recv())["type"] == "session.updated"

        async def reader() -> None:
            async for msg in ws:
                ev = json.loads(msg)
                events.append((time.monotonic(), ev))
                if ev["type"] == "session.finished":
                    return

        reading = asyncio.ensure_future(reader())
        step = 24000 * 2 * STEP_MS // 1000
        t0 = time.monotonic()
        for n, i in enumerate(range(0, len(pcm), step)):
            await asyncio.sleep(max(0.0, t0 + n * STEP_MS / 1000 - time.monotonic()))
            chunk = base64.b64encode(pcm[i : i + step]).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": chunk}))
        # One second of pause at real time, so the last utterance ends by its pause.
        for _ in range(10):
            await asyncio.sleep(STEP_MS / 1000)
            silence = base64.b64encode(b"\0" * step).decode()
            await ws.send(json.dumps({"type": "input_audio_buffer.append", "audio": silence}))
        await ws.send(json.dumps({"type": "session.finish"}))
        await asyncio.wait_for(reading, 300)
    return {"t0": t0, "events": events}


def measure(run: dict) -> dict:
    """Per-utterance latencies of one session (utterances ended by the pause after the audio
    or by session.finish are left out of the end latency: their end is not real speech end)."""
    t0, events = run["t0"], run["events"]
    started: dict[str, float] = {}
    first_delta: dict[str, float] = {}
    end_lat, delta_lat, texts = [], [], []
    for at, ev in events:
        kind, item = ev["type"], ev.get("item_id")
        if kind == "input_audio_buffer.speech_started":
            started[item] = at
        elif kind.endswith("transcription.delta") and item not in first_delta:
            first_delta[item] = at
            if item in started:
                delta_lat.append(at - started[item])
        elif kind.endswith("transcription.completed") and ev["transcript"].strip():
            # Empty ones (no words, or near_field background) took no decode: left out.
            texts.append(ev["transcript"])
            sent_at = t0 + ev["audio_end_ms"] / 1000
            end_lat.append(at - sent_at)
    return {"end": end_lat, "first_delta": delta_lat, "text": " ".join(texts)}


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    return round(float(np.percentile(values, q)), 3)


ONE_GO_S: list[float] = []


def one_go(url: str, key: str | None, path: Path) -> str:
    """The baseline: the whole file in one request (its time shows how loaded we are)."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    t0 = time.monotonic()
    r = httpx.post(
        f"{url}/v1/audio/transcriptions",
        headers=headers,
        files={"file": (path.name, path.read_bytes())},
        data={"model": "whisper-1"},
        timeout=600,
    )
    r.raise_for_status()
    ONE_GO_S.append(time.monotonic() - t0)
    return r.json()["text"]


def wer_pairs(pairs: list[tuple[str, str]]) -> float:
    """Corpus WER: all errors over all reference words."""
    errors = sum(edit_distance(wer_words(ref), wer_words(hyp)) for ref, hyp in pairs)
    return round(100 * errors / sum(len(wer_words(ref)) for ref, _ in pairs), 2)


async def level(url: str, key: str | None, clips: list[bytes]) -> list[dict]:
    return list(await asyncio.gather(*(session(url, key, c) for c in clips)))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", help="A running service; started here when omitted.")
    parser.add_argument("--api-key", default=os.environ.get("AIPP_API_KEY"))
    parser.add_argument("--levels", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "realtime.json")
    args = parser.parse_args()

    handle = None
    url = args.url
    if url is None:
        url, handle = start_service(Path(tempfile.mkdtemp(prefix="aipp-bench-")))
    url = url.rstrip("/")
    try:
        results = run(url, args.api_key, args.levels)
    finally:
        if handle is not None:
            stop_service(handle)
    results["machine"] = machine()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))
    print(json.dumps(results, indent=2))


def summary(ms: list[dict]) -> dict:
    e = [x for m in ms for x in m["end"]]
    d = [x for m in ms for x in m["first_delta"]]
    return {
        "utterances": len(e),
        "end_to_completed_p50_s": pct(e, 50),
        "end_to_completed_p95_s": pct(e, 95),
        "end_to_completed_max_s": round(max(e), 3) if e else None,
        "speech_to_first_delta_p50_s": pct(d, 50),
        "speech_to_first_delta_p95_s": pct(d, 95),
    }


def run(url: str, key: str | None, levels: list[int]) -> dict:
    tracks = [AMI / f"source{i}.flac" for i in range(4)]
    refs = [(AMI / f"ref_{c}.txt").read_text() for c in "ABCD"]
    # The same-run baseline: each recording in one go, on the same service and model.
    jfk_one = one_go(url, key, DATA / "jfk.flac")
    track_one = [one_go(url, key, t) for t in tracks]
    # Which reference is whose: the one the one-go transcript is closest to.
    assign = [
        min(range(4), key=lambda r, h=h: edit_distance(wer_words(refs[r]), wer_words(h)))
        for h in track_one
    ]
    jfk = measure(asyncio.run(session(url, key, pcm24(DATA / "jfk.flac"), near_field=False)))
    out: dict = {
        "one_go_s": {
            "jfk_11s": round(ONE_GO_S[0], 3),
            "ami_60s_median": round(float(np.median(ONE_GO_S[1:])), 3),
        },
        "levels": {},
    }
    by_level: dict[int, list[dict]] = {}
    for n in levels:
        runs = asyncio.run(level(url, key, [pcm24(tracks[i % 4]) for i in range(n)]))
        by_level[n] = [measure(r) for r in runs]
        ms = by_level[n] + ([jfk] if n == 1 else [])
        out["levels"][str(n)] = summary(ms)
        print(n, "sessions:", out["levels"][str(n)], flush=True)
    # WER: JFK, and the four tracks from the widest level that streamed all four.
    widest = max((n for n in levels if n >= 4), default=None)
    if widest is not None:
        streamed = [m["text"] for m in by_level[widest][:4]]
        pairs_stream = [(JFK_REF, jfk["text"])] + [(refs[assign[i]], streamed[i]) for i in range(4)]
        pairs_one = [(JFK_REF, jfk_one)] + [(refs[assign[i]], track_one[i]) for i in range(4)]
        out["wer"] = {
            "streamed_pct": wer_pairs(pairs_stream),
            "one_go_pct": wer_pairs(pairs_one),
            "streamed_vs_one_go_pct": wer_pairs(
                [(one, s) for (_, one), (_, s) in zip(pairs_one, pairs_stream, strict=True)]
            ),
            "reference_words": sum(len(wer_words(r)) for r, _ in pairs_one),
            "streamed_at_sessions": widest,
        }
    out["sustained_sessions"] = max(
        (
            n
            for n, row in out["levels"].items()
            if row["utterances"] and row["end_to_completed_p95_s"] <= 2.0
        ),
        key=int,
        default="0",
    )
    return out


if __name__ == "__main__":
    main()
