"""The public shape of a task (what GET /v1/tasks/{id} and webhooks send)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from app.core.schemas import SummarizeResult
from app.core.task_vocabulary import TaskStatus
from app.storage.sql.models import Task


class TaskError(BaseModel):
    code: str
    message: str


class TaskAudio(BaseModel):
    filename: str | None = None
    url: str | None = None
    sha256: str | None = None
    duration_s: float | None = None


class TaskStages(BaseModel):
    queued_at: datetime | None = None
    transcribing_at: datetime | None = None
    summarizing_at: datetime | None = None
    finished_at: datetime | None = None
    queue_s: float | None = Field(None, description="Waiting before the first stage.")
    transcribe_s: float | None = None
    summarize_s: float | None = None
    total_s: float | None = Field(None, description="From creation to the terminal state.")


class TaskWebhook(BaseModel):
    url: str
    status: str | None = None
    attempts: list[dict[str, Any]] = []


class TaskView(BaseModel):
    id: str
    status: str = Field(description=", ".join(TaskStatus))
    source: str
    created_at: datetime
    updated_at: datetime
    attempts: int
    max_attempts: int
    cached: bool
    audio: TaskAudio
    options: dict[str, Any]
    stages: TaskStages
    error: TaskError | None = None
    result: SummarizeResult | None = None
    webhook: TaskWebhook | None = None


class TaskCreated(BaseModel):
    id: str
    status: str
    created_at: datetime
    cached: bool = False


class TaskPage(BaseModel):
    data: list[TaskView]
    next_cursor: str | None = Field(None, description="Pass as `cursor` for the next page.")


def _span(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def task_view(task: Task, include_result: bool = True) -> TaskView:
    summarize_end = task.finished_at if task.summarizing_at else None
    transcribe_end = task.summarizing_at or (task.finished_at if task.transcribing_at else None)
    stages = TaskStages(
        queued_at=task.queued_at,
        transcribing_at=task.transcribing_at,
        summarizing_at=task.summarizing_at,
        finished_at=task.finished_at,
        queue_s=_span(task.created_at, task.transcribing_at),
        transcribe_s=_span(task.transcribing_at, transcribe_end),
        summarize_s=_span(task.summarizing_at, summarize_end),
        total_s=_span(task.created_at, task.finished_at),
    )
    return TaskView(
        id=task.id,
        status=task.status,
        source=task.source,
        created_at=task.created_at,
        updated_at=task.updated_at,
        attempts=task.attempts,
        max_attempts=task.max_attempts,
        cached=bool(task.cached),
        audio=TaskAudio(
            filename=task.audio_filename,
            url=task.audio_url,
            sha256=task.audio_sha256,
            duration_s=task.duration_s,
        ),
        options=task.options or {},
        stages=stages,
        error=TaskError(code=task.error_code, message=task.error_message or "")
        if task.error_code and task.status != TaskStatus.SUCCEEDED
        else None,
        result=SummarizeResult.model_validate(task.result)
        if include_result and task.result and task.status == TaskStatus.SUCCEEDED
        else None,
        webhook=TaskWebhook(
            url=task.webhook_url, status=task.webhook_status, attempts=task.webhook_attempts or []
        )
        if task.webhook_url
        else None,
    )
