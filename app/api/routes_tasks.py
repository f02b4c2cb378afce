"""Durable async tasks: submit, read, list, transcript formats, cancel, delete, live events.

HTTP only: each route translates the request into a call on the task layer's
door (``app/tasks/door.py``) and its answer back into HTTP. Accepting input as a
task, following it and forgetting it happen there, once, for every route.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from enum import StrEnum

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse, StreamingResponse
from starlette.background import BackgroundTask

from app.api.auth import Principal
from app.api.deps import SUBMISSION_ERRORS, CallerDep, DoorDep, submission_error
from app.api.errors import APIError
from app.api.forms import Uploads, parse_options, request_body
from app.api.limits import rate_limit
from app.core.schemas import Transcript
from app.core.task_vocabulary import (
    TERMINAL_STATUSES,
    TaskOptions,
    TaskSource,
    TaskStatus,
    is_progress,
)
from app.net.url_guard import redact_url
from app.speech.diarize import speaker_names, speaker_text
from app.speech.subtitles import to_srt, to_vtt
from app.tasks.door import InvalidCursor, TaskDoor
from app.tasks.report import to_markdown
from app.tasks.sources import AudioUpload, AudioURL, InputSource, TranscriptUpload
from app.tasks.streams import TooManyStreams
from app.tasks.submit import Submission, SubmitRequest
from app.tasks.views import TaskCreated, TaskPage, TaskView, task_view

router = APIRouter(tags=["tasks"])


def input_source(options: TaskOptions, uploads: Uploads) -> InputSource:
    """Which input the request names: audio, a transcript, or an ``audio_url``; one only."""
    if uploads.file is not None and uploads.transcript is not None:
        raise APIError(
            422, "one_input_only", "send either an audio 'file' or a 'transcript', not both"
        )
    if uploads.transcript is not None:
        return TranscriptUpload(uploads.transcript)
    if uploads.file is not None:
        return AudioUpload(uploads.file)
    if options.audio_url is None:
        raise APIError(
            422,
            "missing_file",
            "send a multipart 'file' (or 'transcript'), or a JSON body with 'audio_url'",
        )
    return AudioURL(options.audio_url)


async def submit_to(
    door: TaskDoor,
    request: Request,
    caller: Principal,
    options: TaskOptions,
    source: InputSource,
    *,
    origin: TaskSource,
    max_minutes: float,
) -> Submission:
    """Hand the submission to the task layer; its refusals become HTTP errors."""
    try:
        return await door.submit(
            SubmitRequest(
                tenant_id=caller.tenant_id,
                options=options,
                source=source,
                origin=origin,
                max_minutes=max_minutes,
                idempotency_key=request.headers.get("idempotency-key"),
            )
        )
    except SUBMISSION_ERRORS as exc:
        raise submission_error(exc) from None


@router.post(
    "/v1/tasks",
    status_code=202,
    response_model=TaskCreated,
    summary="Submit audio (upload or audio_url) or a transcript; 202 and the task's Location",
    openapi_extra=request_body(TaskOptions, json_body=True),
    responses={
        409: {"description": "Idempotency key in flight"},
        422: {"description": "Invalid field, internal webhook_url, or key reused"},
        429: {"description": "Rate limited (Retry-After)"},
    },
)
async def create_task(
    request: Request, response: Response, caller: CallerDep, door: DoorDep
) -> TaskCreated:
    rate_limit(door, caller, response)
    options, uploads = await parse_options(request, TaskOptions, json_body=True)
    sub = await submit_to(
        door,
        request,
        caller,
        options,
        input_source(options, uploads),
        origin=TaskSource.API,
        max_minutes=door.settings.max_audio_minutes,
    )
    task = sub.task
    response.headers["Location"] = f"/v1/tasks/{task.id}"
    if sub.replayed:
        response.headers["Idempotent-Replayed"] = "true"
    return TaskCreated(
        id=task.id, status=task.status, created_at=task.created_at, cached=bool(task.cached)
    )


async def get_task_or_404(door: TaskDoor, task_id: str, caller: Principal):
    task = await door.get(task_id, caller.tenant_id)
    if task is None:
        raise APIError(404, "task_not_found", f"no task '{task_id}'")
    return task


@router.get("/v1/tasks/{task_id}", response_model=TaskView, summary="A task's state and result")
async def get_task(task_id: str, caller: CallerDep, door: DoorDep) -> TaskView:
    return task_view(await get_task_or_404(door, task_id, caller))


@router.get("/v1/tasks", response_model=TaskPage, summary="The caller's tasks, newest first")
def list_tasks(
    caller: CallerDep,
    door: DoorDep,
    status: TaskStatus | None = Query(None),
    limit: int = Query(20, ge=1, le=100),
    cursor: str | None = Query(None, description="`next_cursor` of the previous page."),
    include_result: bool = Query(False, description="Embed each result (larger pages)."),
) -> TaskPage:
    try:
        items, next_cursor = door.list(
            caller.tenant_id, status=status.value if status else None, limit=limit, cursor=cursor
        )
    except InvalidCursor:
        raise APIError(
            400,
            "invalid_cursor",
            "cursor: not one this API returned",
            extra={"field": "cursor"},
        ) from None
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
async def get_transcript(
    task_id: str,
    caller: CallerDep,
    door: DoorDep,
    format: TranscriptFormat = Query(TranscriptFormat.txt),  # noqa: A002
):
    task = await get_task_or_404(door, task_id, caller)
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
        # A presigned audio_url's query is a credential: the document shows the URL without it.
        title = task.audio_filename or (task.audio_url and redact_url(task.audio_url)) or task.id
        return PlainTextResponse(to_markdown(task.result, title), media_type="text/markdown")
    if transcript.get("speakers"):
        return PlainTextResponse(speaker_text(Transcript.model_validate(transcript)) + "\n")
    return PlainTextResponse(transcript["text"] + "\n")


@router.post(
    "/v1/tasks/{task_id}/cancel",
    status_code=202,
    response_model=TaskView,
    summary="Cancel a queued or running task (409 if it has already ended)",
)
async def cancel_task(task_id: str, caller: CallerDep, door: DoorDep) -> TaskView:
    task = await get_task_or_404(door, task_id, caller)
    if task.status in TERMINAL_STATUSES:
        raise APIError(409, "task_finished", f"the task has already {task.status}")
    return task_view(await door.cancel(task))


@router.delete(
    "/v1/tasks/{task_id}",
    status_code=204,
    summary="Cancel if running, then remove the task, its result, cached result and audio",
)
async def delete_task(task_id: str, caller: CallerDep, door: DoorDep) -> Response:
    await door.delete(await get_task_or_404(door, task_id, caller))
    return Response(status_code=204)


def _sse(event: str, data: dict) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n".encode()


@router.get(
    "/v1/tasks/{task_id}/events",
    summary="Server-Sent Events: one per status change",
    response_class=StreamingResponse,
)
async def task_events(task_id: str, request: Request, caller: CallerDep, door: DoorDep):
    await get_task_or_404(door, task_id, caller)  # 404 before streaming
    try:
        slot = door.stream_slot(caller.tenant_id)
    except TooManyStreams as exc:
        raise APIError(429, "too_many_streams", exc.message, headers={"Retry-After": "5"}) from None

    async def stream() -> AsyncIterator[bytes]:
        last = None  # a tick of the same status is "progress"; a change is "status"
        try:
            async for event in door.follow(task_id, stop=request.is_disconnected):
                status = event.get("status")
                kind = "progress" if status == last and is_progress(event) else "status"
                yield _sse(kind, event)
                last = status
        finally:
            slot.release()

    return StreamingResponse(
        stream(),
        media_type="text/event-stream",
        headers={"X-Accel-Buffering": "no"},
        # Also when the stream never started (the client left first): no slot leaks.
        background=BackgroundTask(slot.release),
    )
