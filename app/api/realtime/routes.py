"""``WS /v1/realtime``: OpenAI Realtime transcription sessions, through the Serve ingress.

Connect as the ``openai`` SDK does (``client.realtime.connect(model=...)`` or
``?intent=transcription``), with ``Authorization: Bearer <key>`` or, from a browser,
the ``openai-insecure-api-key.<key>`` subprotocol. Every refusal is an ``error``
event naming the problem, then a close with a code that says why:

- 1008 policy: no or bad API key, unknown event type;
- 1013 try again later: ``AIPP_REALTIME_MAX_SESSIONS`` sessions already open here,
  or the key's rate limit;
- 1009 too big: a message over ``AIPP_REALTIME_MAX_FRAME_KB``;
- 1007 bad data: not JSON, not an event object, audio that is not 16-bit PCM base64;
- 1003 unsupported: binary frames; 1000 normal: idle timeout, session finished.

When the session ends (``session.finish``, the client's close, or an abrupt
disconnect) its audio becomes a task through the task door, like an upload (origin
``live``); ``session.finish`` answers ``session.finished`` with the task id first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import Any

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from starlette.websockets import WebSocketState

from app.api.auth import Principal, arrived_beyond_loopback
from app.api.errors import APIError
from app.api.guard import host_port, origin_of, policy_from, split_host
from app.api.limits import rate_limit
from app.api.realtime.protocol import CLIENT_EVENTS, ProtocolError, SessionConfig, error_event
from app.api.realtime.session import LiveSession, Segment
from app.core.task_vocabulary import TaskSource
from app.speech.stt import SttOptions
from app.tasks.door import TaskDoor
from app.tasks.pipeline import Pipeline
from app.tasks.sources import LiveRecording
from app.tasks.submit import SubmitRequest

logger = logging.getLogger(__name__)

router = APIRouter(tags=["realtime"])

KEY_PROTOCOL = "openai-insecure-api-key."


class SessionSlots:
    """How many realtime sessions this replica holds, against the configured maximum."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0

    def take(self) -> bool:
        if self.open >= self.limit:
            return False
        self.open += 1
        return True

    def give_back(self) -> None:
        self.open = max(0, self.open - 1)


#: Sessions still turning into tasks after their socket closed (kept from the GC).
_ENDING: set[asyncio.Task] = set()


def _slots(websocket: WebSocket, limit: int) -> SessionSlots:
    state = websocket.app.state
    if getattr(state, "realtime_slots", None) is None:
        state.realtime_slots = SessionSlots(limit)
    return state.realtime_slots


def _credentials(websocket: WebSocket) -> tuple[str | None, str | None]:
    """(Authorization header, the subprotocol to answer with)."""
    offered = list(websocket.scope.get("subprotocols") or [])
    authorization = websocket.headers.get("authorization")
    for proto in offered:
        if proto.startswith(KEY_PROTOCOL) and not authorization:
            authorization = f"Bearer {proto[len(KEY_PROTOCOL) :]}"
    answer = "realtime" if "realtime" in offered else None
    return authorization, answer


def _open_mode_refusal(websocket: WebSocket, settings: Any) -> ProtocolError | None:
    """Without keys, a web page must not reach the service: refuse an untrusted ``Host``
    (DNS rebinding) and an ``Origin`` other than this service's (any page can open a
    WebSocket to 127.0.0.1; browsers send their origin)."""
    policy = policy_from(settings, auth_required=False)
    raw_host = websocket.headers.get("host", "")
    if not policy.host_trusted(split_host(raw_host)):
        return ProtocolError(
            "untrusted_host",
            "this Host is not served here; add it to AIPP_TRUSTED_HOSTS or turn API keys on",
            close=1008,
        )
    origin = websocket.headers.get("origin")
    if origin is None:
        return None  # not a browser: SDKs and tools send no Origin
    scheme = "https" if websocket.url.scheme == "wss" else "http"
    parsed = origin_of(origin)
    same = parsed is not None and parsed == (scheme, *host_port(raw_host, scheme))
    trusted = parsed is not None and parsed[1] in {h.lower() for h in policy.trusted_hosts}
    if same or trusted:
        return None
    return ProtocolError(
        "cross_site_request",
        f"refusing a WebSocket from another origin ({origin[:200]}); use an API key",
        close=1008,
    )


async def _refuse(websocket: WebSocket, exc: ProtocolError) -> None:
    with contextlib.suppress(Exception):
        await websocket.send_json(error_event(exc))
    with contextlib.suppress(Exception):
        await websocket.close(code=exc.close or 1008, reason=exc.code[:120])


@router.websocket("/v1/realtime")
async def realtime(websocket: WebSocket) -> None:
    app_state = websocket.app.state
    door: TaskDoor = app_state.door
    pipeline: Pipeline = app_state.pipeline
    settings = door.settings
    authorization, subprotocol = _credentials(websocket)
    await websocket.accept(subprotocol=subprotocol)

    try:
        caller: Principal = await asyncio.to_thread(
            app_state.authenticator.authenticate,
            authorization,
            required=True if arrived_beyond_loopback(websocket.scope) else None,
        )
        await asyncio.to_thread(rate_limit, door, caller, None)
    except APIError as exc:
        close = 1013 if exc.status_code == 429 else 1008
        await _refuse(websocket, ProtocolError(exc.code, exc.message, close=close))
        return
    websocket.state.caller = caller
    if caller.key_id is None:  # keys off: what the HTTP guard checks for browsers, here
        refusal = _open_mode_refusal(websocket, settings)
        if refusal is not None:
            await _refuse(websocket, refusal)
            return

    slots = _slots(websocket, settings.realtime_max_sessions)
    if not slots.take():
        await _refuse(
            websocket,
            ProtocolError(
                "too_many_sessions",
                f"this server already holds its limit of {slots.limit} realtime sessions "
                "(AIPP_REALTIME_MAX_SESSIONS); try again later",
                close=1013,
            ),
        )
        return
    try:
        await _run(websocket, door, pipeline, caller)
    finally:
        slots.give_back()


async def _run(websocket: WebSocket, door: TaskDoor, pipeline: Pipeline, caller: Principal) -> None:
    settings = door.settings
    config = SessionConfig(beta="realtime" in websocket.headers.get("openai-beta", ""))

    async def transcribe(wav: bytes, options: SttOptions) -> str:
        out = await pipeline.transcribe(wav, options)
        return out.transcript.text

    async def send(ev: dict[str, Any]) -> None:
        if websocket.client_state == WebSocketState.CONNECTED:
            await websocket.send_json(ev)

    session = LiveSession(
        config,
        transcribe,
        send,
        max_audio_s=settings.max_audio_minutes * 60,
        max_utterance_s=settings.realtime_max_utterance_s,
        decode_interval_s=settings.realtime_decode_interval_s,
    )
    finished = False
    try:
        await send(config.session_event("created"))
        finished = await _receive(websocket, session, settings)
    except WebSocketDisconnect:
        pass
    except ProtocolError as exc:
        await _refuse(websocket, exc)
    except Exception as exc:  # never let a session take the replica down
        logger.exception("realtime session failed")
        await _refuse(
            websocket,
            ProtocolError("server_error", f"session failed: {type(exc).__name__}", close=1011),
        )
    finally:
        if not finished:
            # Detached and shielded: a disconnect may cancel this handler, not the task.
            ending = asyncio.ensure_future(_to_task(door, caller, session))
            _ENDING.add(ending)
            ending.add_done_callback(_ENDING.discard)
            with contextlib.suppress(BaseException):
                await asyncio.shield(ending)
            with contextlib.suppress(Exception):
                await websocket.close(code=1000)


async def _receive(websocket: WebSocket, session: LiveSession, settings: Any) -> bool:
    """The client's events until it leaves; True when it finished the session itself."""
    limit = settings.realtime_max_frame_kb * 1024
    while True:
        try:
            message = await asyncio.wait_for(
                websocket.receive(), timeout=settings.realtime_idle_timeout_s
            )
        except TimeoutError:
            raise ProtocolError(
                "idle_timeout",
                f"no event for {settings.realtime_idle_timeout_s:g} s "
                "(AIPP_REALTIME_IDLE_TIMEOUT_S): the session is closed",
                close=1000,
            ) from None
        if message["type"] == "websocket.disconnect":
            raise WebSocketDisconnect(message.get("code", 1000))
        text = message.get("text")
        if text is None:
            raise ProtocolError(
                "binary_not_supported",
                "binary messages are not accepted: send JSON events as text",
                close=1003,
            )
        if len(text) > limit:
            raise ProtocolError(
                "message_too_large",
                f"a message of {len(text) // 1024} KiB is over the limit of "
                f"{settings.realtime_max_frame_kb} KiB (AIPP_REALTIME_MAX_FRAME_KB): "
                "send audio in smaller appends",
                close=1009,
            )
        ev = _parse(text)
        try:
            if await _dispatch(websocket, session, ev):
                return True
        except ProtocolError as exc:
            exc.event_id = exc.event_id or _str(ev.get("event_id"))
            if exc.close is not None:
                raise
            await websocket.send_json(error_event(exc))


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _parse(text: str) -> dict[str, Any]:
    try:
        ev = json.loads(text)
    except ValueError:
        raise ProtocolError(
            "invalid_json", "the message is not JSON: send one JSON event per message", close=1007
        ) from None
    if not isinstance(ev, dict) or not isinstance(ev.get("type"), str):
        raise ProtocolError(
            "invalid_event", "an event is a JSON object with a string 'type'", close=1007
        )
    return ev


async def _dispatch(websocket: WebSocket, session: LiveSession, ev: dict[str, Any]) -> bool:
    kind = ev["type"]
    if kind not in CLIENT_EVENTS:
        raise ProtocolError(
            "unknown_event",
            f"unknown event type '{kind[:80]}': a transcription session takes "
            + ", ".join(CLIENT_EVENTS),
            param="type",
            close=1008,
        )
    if kind in ("session.update", "transcription_session.update"):
        session.config.apply(ev)
        session.reconfigure()
        await websocket.send_json(session.config.session_event("updated"))
    elif kind == "input_audio_buffer.append":
        await session.append(ev.get("audio"))
    elif kind == "input_audio_buffer.commit":
        await session.commit()
    elif kind == "input_audio_buffer.clear":
        await session.clear()
    else:  # session.finish (aipp): the last utterance, the task, then a normal close
        task_id, error = await _to_task(_door(websocket), _caller_of(websocket), session)
        await websocket.send_json(
            {
                "type": "session.finished",
                "event_id": session.config.id,
                "task_id": task_id,
                "transcript": session.text,
                "error": error,
            }
        )
        await websocket.close(code=1000)
        return True
    return False


def _door(websocket: WebSocket) -> TaskDoor:
    return websocket.app.state.door


def _caller_of(websocket: WebSocket) -> Principal:
    return websocket.state.caller


async def _to_task(
    door: TaskDoor, caller: Principal, session: LiveSession
) -> tuple[str | None, str | None]:
    """The session's last decode, then its audio as a task; (task id, error message)."""
    try:
        segments: list[Segment] = await session.finish()
        if not session.config.keep:
            return None, None
        if session.samples == 0:
            return None, "the session received no audio"
        recording = LiveRecording(
            data=session.recording(),
            duration_s=round(session.seconds, 3),
            filename=f"live-{session.config.id}.wav",
        )
        sub = await door.submit(
            SubmitRequest(
                tenant_id=caller.tenant_id,
                options=session.config.task,
                source=recording,
                origin=TaskSource.LIVE,
                max_minutes=door.settings.max_audio_minutes,
            )
        )
        logger.info(
            "realtime session %s: %.1fs, %d utterances -> task %s",
            session.config.id,
            session.seconds,
            len(segments),
            sub.task.id,
        )
        return sub.task.id, None
    except Exception as exc:
        logger.warning("realtime session %s did not become a task: %r", session.config.id, exc)
        return None, f"the session could not become a task: {getattr(exc, 'message', exc)}"
    finally:
        session.close()


__all__ = ["SessionSlots", "router"]
