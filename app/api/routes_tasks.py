"""Durable async tasks: submit, read, list, transcript formats, delete, live events."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from enum import StrEnum

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse

from app.api.deps import principal, services_of
from app.tasks.submit import TaskOptions, parse_task_request, rate_limit, submit
from app.tasks.views import TaskCreated, TaskPage, TaskView, task_view
from app.api.auth import Principal
from app.storage.sql.models import TaskSource
from app.storage.sql.tasks import BadCursor
from app.api.errors import APIError
from app.storage.redis.events import EventsUnavailable, subscription
from app.speech.subtitles import to_srt, to_vtt

router = APIRouter(tags=["tasks"])

TERMINAL = {"succeeded", "failed", "cancelled"}

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


@router.post(
    "/v1/tasks",
    status_code=202,
    response_model=TaskCreated,
    summary="Submit audio (upload or audio_url); returns 202 and the task's Location",
    openapi_extra=_TASK_BODY,
    responses={
        409: {"description": "Idempotency key in flight"},
        429: {"description": "Rate limited (Retry-After)"},
    },
)
async def create_task(
    request: Request, response: Response, caller: Principal = Depends(principal)
) -> TaskCreated:
    services = services_of(request)
    rate_limit(services, caller, response)
    options, file = await parse_task_request(request)
    sub = await submit(
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


def _get_task(request: Request, task_id: str, caller: Principal):
    task = services_of(request).store.get(task_id, caller.tenant_id)
    if task is None:
        raise APIError(404, "task_not_found", f"no task '{task_id}'")
    return task


@router.get("/v1/tasks/{task_id}", response_model=TaskView, summary="A task's state and result")
def get_task(task_id: str, request: Request, caller: Principal = Depends(principal)) -> TaskView:
    return task_view(_get_task(request, task_id, caller))


class StatusFilter(StrEnum):
    queued = "queued"
    transcribing = "transcribing"
    summarizing = "summarizing"
    succeeded = "succeeded"
    failed = "failed"
    cancelled = "cancelled"


@router.get("/v1/tasks", response_model=TaskPage, summary="The caller's tasks, newest first")
def list_tasks(
    request: Request,
    status: StatusFilter | None = Query(None),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
    include_result: bool = Query(False, description="Embed each result (larger pages)."),
    caller: Principal = Depends(principal),
) -> TaskPage:
    try:
        items, next_cursor = services_of(request).store.list(
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


@router.get("/v1/tasks/{task_id}/transcript", summary="The transcript as txt, json, srt or vtt")
def get_transcript(
    task_id: str,
    request: Request,
    format: TranscriptFormat = Query(TranscriptFormat.txt),  # noqa: A002
    caller: Principal = Depends(principal),
):
    task = _get_task(request, task_id, caller)
    if task.status != "succeeded" or not task.result:
        raise APIError(
            409,
            "task_not_succeeded",
            f"the task is {task.status}; a transcript exists once it has succeeded",
        )
    transcript = task.result["transcript"]
    if format is TranscriptFormat.json:
        return transcript
    if format is TranscriptFormat.srt:
        return PlainTextResponse(to_srt(transcript["segments"]), media_type="application/x-subrip")
    if format is TranscriptFormat.vtt:
        return PlainTextResponse(to_vtt(transcript["segments"]), media_type="text/vtt")
    return PlainTextResponse(transcript["text"] + "\n")


@router.delete(
    "/v1/tasks/{task_id}",
    status_code=204,
    summary="Cancel if running, then remove the task, its result and its audio",
)
def delete_task(task_id: str, request: Request, caller: Principal = Depends(principal)):
    services = services_of(request)
    task = _get_task(request, task_id, caller)
    if task.status not in TERMINAL:
        services.store.cancel(task_id, caller.tenant_id)
    services.store.delete(task_id, caller.tenant_id)
    if task.audio_uri and task.audio_sha256 and not services.store.audio_in_use(task.audio_sha256):
        services.blobs.delete(task.audio_uri)
    return Response(status_code=204)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get(
    "/v1/tasks/{task_id}/events",
    summary="Server-Sent Events: one per status change",
    response_class=StreamingResponse,
)
async def task_events(task_id: str, request: Request, caller: Principal = Depends(principal)):
    services = services_of(request)
    await asyncio.to_thread(_get_task, request, task_id, caller)  # 404 before streaming

    async def stream() -> AsyncIterator[bytes]:
        last_status = None

        def snapshot_event(t) -> dict:
            data = {"task_id": t.id, "status": t.status}
            if t.status == "succeeded" and t.result:
                data["summary"] = t.result.get("summary")
            if t.error_code and t.status != "succeeded":
                data["error"] = {"code": t.error_code, "message": t.error_message}
            return data

        if services.aredis is not None:
            try:
                async with subscription(services.aredis, task_id) as sub:
                    # Subscribed first, then read: no event can fall in between.
                    current = await asyncio.to_thread(services.store.get, task_id)
                    if current is None:
                        return
                    last_status = current.status
                    yield _sse("status", snapshot_event(current))
                    if current.status in TERMINAL:
                        return
                    async for event in sub.events(stop_on_terminal=True, poll_s=1.0):
                        if await request.is_disconnected():
                            return
                        status = event.get("status")
                        if status == last_status and "progress" in event:
                            yield _sse("progress", event)
                            continue
                        if status in TERMINAL:
                            final = await asyncio.to_thread(services.store.get, task_id)
                            if final is not None:
                                yield _sse("status", snapshot_event(final))
                            return
                        last_status = status
                        yield _sse("status", event)
                return
            except EventsUnavailable:
                pass
        # Redis is down: poll the database instead (coarser, but nothing is missed at the end).
        while True:
            current = await asyncio.to_thread(services.store.get, task_id)
            if current is None:
                return
            if current.status != last_status:
                last_status = current.status
                yield _sse("status", snapshot_event(current))
            if current.status in TERMINAL or await request.is_disconnected():
                return
            await asyncio.sleep(0.5)

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
