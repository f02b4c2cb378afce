"""Durable async tasks: submit, read, list, transcript formats, cancel, delete, live events.

This is the HTTP side only: reading the request (multipart or JSON), the audio
and its limits. Accepting it as a task is :func:`app.tasks.submit.submit`;
running it is the TaskRunner deployment's job.
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import AsyncIterator
from enum import StrEnum
from typing import Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from pydantic import ValidationError

from app.api.auth import Principal
from app.api.deps import CallerDep, ModelsDep, ServicesDep, models_of, services_of, submission_error
from app.api.errors import APIError, to_api_error
from app.api.limits import rate_limit
from app.api.uploads import check_audio, read_upload
from app.core.schemas import Transcript
from app.net.url_guard import URLFetchError, check_url, fetch_audio
from app.speech.diarize import speaker_names, speaker_text
from app.speech.subtitles import to_srt, to_vtt
from app.storage.clients import Services
from app.storage.redis.events import EventsUnavailable, subscription
from app.storage.sql.models import TERMINAL_STATUSES, Task, TaskSource, TaskStatus
from app.storage.sql.tasks import BadCursor
from app.tasks.announce import announce_terminal, publish, task_event
from app.tasks.options import ProcessingOptions, TaskOptions
from app.tasks.report import to_markdown
from app.tasks.submit import (
    Submission,
    SubmissionError,
    check_idempotency_key,
    check_instruction,
    check_webhook_url,
    submit,
)
from app.tasks.views import TaskCreated, TaskPage, TaskView, task_view

router = APIRouter(tags=["tasks"])

_TASK_BODY = {
    "requestBody": {
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["file"],
                    "properties": {
                        "file": {"type": "string", "format": "binary"},
                        "language": {"type": "string"},
                        "webhook_url": {"type": "string", "format": "uri"},
                        "instruction": {"type": "string"},
                    },
                }
            },
            "application/json": {"schema": TaskOptions.model_json_schema()},
        },
        "required": True,
    }
}


async def parse_task_request(request: Request) -> tuple[TaskOptions, Any]:
    """Multipart (file + form fields) or JSON (audio_url + options)."""
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()
            fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str) and v}
            options = TaskOptions.model_validate(fields)
            file = form.get("file")
            if file is not None and isinstance(file, str):
                raise APIError(422, "missing_file", "the field 'file' must be a file upload")
            if file is None and options.audio_url is None:
                raise APIError(
                    422, "missing_file", "send a multipart 'file' or a JSON body with 'audio_url'"
                )
            return options, file
        if ctype.startswith("application/json"):
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise APIError(400, "invalid_json", "the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise APIError(422, "invalid_request", "the JSON body must be an object")
            options = TaskOptions.model_validate(body)
            if options.audio_url is None:
                raise APIError(422, "missing_audio_url", "the JSON body needs 'audio_url'")
            return options, None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "request"
        raise APIError(
            422, "invalid_request", f"{field}: {first.get('msg')}", extra={"field": field}
        ) from None
    raise APIError(
        415,
        "unsupported_content_type",
        "use multipart/form-data with a 'file', or application/json with 'audio_url'",
    )


async def load_audio(request_file, options: TaskOptions, services: Services) -> bytes:
    settings = services.settings
    if request_file is not None:
        return await read_upload(request_file, settings)
    url = str(options.audio_url)
    try:
        check_url(url, settings.url_allow)
        data = await fetch_audio(
            url,
            max_bytes=int(settings.max_upload_mb * 1024 * 1024),
            timeout_s=settings.url_fetch_timeout_s,
            allow=settings.url_allow,
        )
    except URLFetchError as exc:
        raise to_api_error(exc) from None
    if not data:
        raise APIError(422, "empty_file", "the audio_url returned an empty body")
    return data


async def submit_request(
    request: Request,
    caller: Principal,
    options: TaskOptions,
    request_file,
    *,
    source: TaskSource,
    max_minutes: float,
) -> Submission:
    """Header and URL checks first, then the audio and its limits, then the task layer."""
    services = services_of(request)
    idem_key = request.headers.get("idempotency-key")
    try:
        check_idempotency_key(idem_key)
        # Off the event loop: the URL check resolves DNS and the audio check walks packets.
        check_instruction(options, services)
        await asyncio.to_thread(check_webhook_url, options, services)  # before any audio
        data = await load_audio(request_file, options, services)
        duration = await asyncio.to_thread(check_audio, data, max_minutes)
        sub = await submit(
            services,
            models_of(request),
            tenant_id=caller.tenant_id,
            options=options,
            audio=data,
            duration_s=duration,
            filename=getattr(request_file, "filename", None),
            idempotency_key=idem_key,
            source=source,
        )
    except SubmissionError as exc:
        raise submission_error(exc) from None
    runner = getattr(request.app.state, "runner", None)
    if sub.woken == 0 and runner is not None:
        runner.wake.remote()  # no Redis listener heard it: wake one runner through Serve
    return sub


@router.post(
    "/v1/tasks",
    status_code=202,
    response_model=TaskCreated,
    summary="Submit audio (upload or audio_url); returns 202 and the task's Location",
    openapi_extra=_TASK_BODY,
    responses={
        409: {"description": "Idempotency key in flight"},
        422: {"description": "Invalid field, internal webhook_url, or key reused"},
        429: {"description": "Rate limited (Retry-After)"},
    },
)
async def create_task(
    request: Request, response: Response, caller: CallerDep, services: ServicesDep
) -> TaskCreated:
    rate_limit(services, caller, response)
    options, file = await parse_task_request(request)
    sub = await submit_request(
        request,
        caller,
        options,
        file,
        source=TaskSource.API,
        max_minutes=services.settings.max_audio_minutes,
    )
    task = sub.task
    response.headers["Location"] = f"/v1/tasks/{task.id}"
    if sub.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TaskCreated(
        id=task.id, status=task.status, created_at=task.created_at, cached=bool(task.cached)
    )


def _get_task(services: Services, task_id: str, caller: Principal) -> Task:
    task = services.store.get(task_id, caller.tenant_id)
    if task is None:
        raise APIError(404, "task_not_found", f"no task '{task_id}'")
    return task


@router.get("/v1/tasks/{task_id}", response_model=TaskView, summary="A task's state and result")
def get_task(task_id: str, caller: CallerDep, services: ServicesDep) -> TaskView:
    return task_view(_get_task(services, task_id, caller))


@router.get("/v1/tasks", response_model=TaskPage, summary="The caller's tasks, newest first")
def list_tasks(
    caller: CallerDep,
    services: ServicesDep,
    status: TaskStatus | None = Query(None),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
    include_result: bool = Query(False, description="Embed each result (larger pages)."),
) -> TaskPage:
    try:
        items, next_cursor = services.store.list(
            caller.tenant_id, status=status.value if status else None, limit=limit, cursor=cursor
        )
    except BadCursor:
        raise APIError(400, "invalid_cursor", "the cursor is not one this API returned") from None
    return TaskPage(data=[task_view(t, include_result) for t in items], next_cursor=next_cursor)


class TranscriptFormat(StrEnum):
    txt = "txt"
    json = "json"
    srt = "srt"
    vtt = "vtt"
    md = "md"  # summary with evidence, chapters, timestamped transcript


@router.get(
    "/v1/tasks/{task_id}/transcript",
    summary="The transcript as txt, json, srt or vtt; md adds the summary with its evidence",
)
def get_transcript(
    task_id: str,
    caller: CallerDep,
    services: ServicesDep,
    format: TranscriptFormat = Query(TranscriptFormat.txt),  # noqa: A002
):
    task = _get_task(services, task_id, caller)
    if task.status != TaskStatus.SUCCEEDED or not task.result:
        raise APIError(
            409,
            "task_not_succeeded",
            f"the task is {task.status}; a transcript exists once it has succeeded",
        )
    transcript = task.result["transcript"]
    if format is TranscriptFormat.json:
        return transcript
    # Diarized: speaker names (after PATCH .../speakers) or "Speaker N" in every format.
    names = speaker_names(transcript)
    if format is TranscriptFormat.srt:
        return PlainTextResponse(
            to_srt(transcript["segments"], names), media_type="application/x-subrip"
        )
    if format is TranscriptFormat.vtt:
        return PlainTextResponse(to_vtt(transcript["segments"], names), media_type="text/vtt")
    if format is TranscriptFormat.md:
        title = task.audio_filename or task.audio_url or task.id
        return PlainTextResponse(to_markdown(task.result, title), media_type="text/markdown")
    if transcript.get("speakers"):
        return PlainTextResponse(speaker_text(Transcript.model_validate(transcript)) + "\n")
    return PlainTextResponse(transcript["text"] + "\n")


async def _cancel(services: Services, task: Task, caller: Principal) -> Task:
    """Cancel and announce: a queued task ends here (event + webhook); a running one
    ends at the runner's next lease renewal, which cancels its pipeline and announces."""
    after = await asyncio.to_thread(services.store.cancel, task.id, caller.tenant_id)
    if after is None:
        return task
    if after.status in TERMINAL_STATUSES and task.status not in TERMINAL_STATUSES:
        await announce_terminal(services, after)
    elif after.status not in TERMINAL_STATUSES:
        await publish(services, after.id, task_event(after, cancel_requested=True))
    return after


@router.post(
    "/v1/tasks/{task_id}/cancel",
    status_code=202,
    response_model=TaskView,
    summary="Cancel a queued or running task (409 if it has already ended)",
)
async def cancel_task(task_id: str, caller: CallerDep, services: ServicesDep) -> TaskView:
    task = await asyncio.to_thread(_get_task, services, task_id, caller)
    if task.status in TERMINAL_STATUSES:
        raise APIError(409, "task_finished", f"the task has already {task.status}")
    return task_view(await _cancel(services, task, caller))


@router.delete(
    "/v1/tasks/{task_id}",
    status_code=204,
    summary="Cancel if running, then remove the task, its result, cached result and audio",
)
async def delete_task(
    task_id: str, caller: CallerDep, services: ServicesDep, models: ModelsDep
) -> Response:
    task = await asyncio.to_thread(_get_task, services, task_id, caller)
    if task.status not in TERMINAL_STATUSES:
        task = await _cancel(services, task, caller)
        if task.status not in TERMINAL_STATUSES:
            # Running: it ends now for the caller; the runner sees the row gone and stops.
            task.status = TaskStatus.CANCELLED.value
            await announce_terminal(services, task, deleted=True)
    await asyncio.to_thread(services.store.delete, task_id, caller.tenant_id)
    await asyncio.to_thread(_forget_audio, services, task)
    if services.cache is not None and task.audio_sha256:
        try:
            # Any known ids will do, and never wait long: a busy Summarizer must not hold
            # up a DELETE. Unknown ids: the cached entry expires by its TTL instead.
            ids = await asyncio.wait_for(models.ids(max_age_s=math.inf), timeout=3)
        except Exception:
            ids = None
        if ids is not None:
            await asyncio.to_thread(
                lambda: services.cache.delete(
                    task.audio_sha256,
                    ids,
                    ProcessingOptions.of(task).stored(),
                    tenant=task.tenant_id,
                )
            )
    return Response(status_code=204)


def _forget_audio(services: Services, task: Task) -> None:
    if task.audio_uri and task.audio_sha256 and not services.store.audio_in_use(task.audio_sha256):
        services.blobs.delete(task.audio_uri)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


# Without an event for this long, the stream re-reads the database (a lost event
# costs seconds, not a stream that never closes).
_SSE_RECHECK_S = 5.0


@router.get(
    "/v1/tasks/{task_id}/events",
    summary="Server-Sent Events: one per status change",
    response_class=StreamingResponse,
)
async def task_events(task_id: str, request: Request, caller: CallerDep, services: ServicesDep):
    await asyncio.to_thread(_get_task, services, task_id, caller)  # 404 before streaming

    async def stream() -> AsyncIterator[bytes]:
        last_status = None
        if services.aredis is not None:
            try:
                async with subscription(services.aredis, task_id) as sub:
                    # Subscribed first, then read: no event can fall in between.
                    current = await asyncio.to_thread(services.store.get, task_id)
                    if current is None:
                        return
                    last_status = current.status
                    yield _sse("status", task_event(current))
                    if current.status in TERMINAL_STATUSES:
                        return
                    while True:
                        event = await sub.next_event(_SSE_RECHECK_S)
                        if await request.is_disconnected():
                            return
                        if event is None or event.get("status") in TERMINAL_STATUSES:
                            final = await asyncio.to_thread(services.store.get, task_id)
                            if final is None:  # deleted: the final event says so
                                if event is not None:
                                    yield _sse("status", event)
                                return
                            if final.status in TERMINAL_STATUSES:
                                yield _sse("status", task_event(final))
                                return
                            if event is not None:
                                # A final event ahead of its row (DELETE of a running task
                                # announces, then removes): it is still the last word.
                                yield _sse("status", event)
                                return
                            if final.status != last_status:  # a quiet spell: re-read
                                last_status = final.status
                                yield _sse("status", task_event(final))
                            continue
                        status = event.get("status")
                        if status == last_status and "progress" in event:
                            yield _sse("progress", event)
                            continue
                        last_status = status
                        yield _sse("status", event)
            except EventsUnavailable:
                pass
        # Redis is down: poll the database instead (coarser, but nothing is missed at the end).
        while True:
            current = await asyncio.to_thread(services.store.get, task_id)
            if current is None:
                return
            if current.status != last_status:
                last_status = current.status
                yield _sse("status", task_event(current))
            if current.status in TERMINAL_STATUSES or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
