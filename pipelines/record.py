"""Record batch results as finished tasks, so the HTTP API lists and serves them too.

Each output row becomes one task, born ``succeeded`` or ``failed``
(``source=batch``), under a tenant (``--tenant``, default ``batch``). The task
id is chosen before the row is written, so the part file and the database
agree; the driver writes the part file first and the task right after. If a
job dies between the two, the next run finds the row's ``task_id`` missing
from the database and records it then (:meth:`TaskRecorder.backfill`).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from app.core.schemas import (
    ModelIds,
    Segment,
    SpeakerCount,
    SpeakerInfo,
    SummarizeResult,
    Summary,
    Timings,
    Transcript,
)
from app.core.task_vocabulary import TaskSource, TaskStatus


def task_result(row: dict) -> dict:
    """The same ``SummarizeResult`` document the service stores for an API task."""
    timings = row.get("timings") or {}
    result = SummarizeResult(
        transcript=Transcript(
            text=row.get("transcript_text") or "",
            language=row.get("language") or "",
            duration_s=row.get("duration_s") or 0.0,
            segments=[Segment(**s) for s in row.get("segments") or []],
            speakers=[SpeakerInfo(**s) for s in row.get("speakers") or []] or None,
            speaker_count=SpeakerCount(**row["speaker_count"])
            if row.get("speaker_count")
            else None,
        ),
        summary=Summary(
            summary=row.get("summary") or "",
            key_points=list(row.get("key_points") or []),
            action_items=list(row.get("action_items") or []),
        ),
        models=ModelIds(
            stt=(row.get("models") or {}).get("stt") or "",
            llm=(row.get("models") or {}).get("llm") or "",
        ),
        timings=Timings(
            decode_s=timings.get("decode_s") or 0.0,
            transcribe_s=timings.get("transcribe_s") or 0.0,
            summarize_s=timings.get("summarize_s") or 0.0,
            total_s=timings.get("total_s") or 0.0,
        ),
    )
    return result.model_dump(mode="json")


class TaskRecorder:
    def __init__(self, database_url: str, tenant: str, options: dict | None = None) -> None:
        from app.storage.sql.engine import make_engine
        from app.storage.sql.keys import ensure_tenant
        from app.storage.sql.migrate import upgrade
        from app.storage.sql.tasks import TaskStore

        upgrade(database_url)
        self.engine = make_engine(database_url)
        self.tenant = ensure_tenant(self.engine, tenant)
        self.store = TaskStore(self.engine)
        self.options = dict(options or {})
        self.recorded = 0

    def record(self, row: dict) -> None:
        total = (row.get("timings") or {}).get("total_s") or 0.0
        finished = row.get("finished_at") or datetime.now(UTC)
        ok = row.get("status") == TaskStatus.SUCCEEDED
        self.store.create_finished(
            task_id=row["task_id"],
            tenant_id=self.tenant.id,
            status=TaskStatus.SUCCEEDED if ok else TaskStatus.FAILED,
            source=TaskSource.BATCH,
            result=task_result(row) if ok else None,
            audio_sha256=row.get("sha256"),
            audio_uri=row.get("path"),
            audio_filename=posixpath.basename(row.get("path") or "")[:512] or None,
            duration_s=row.get("duration_s"),
            options=self.options,
            error_code=None if ok else row.get("error_code"),
            error_message=None if ok else row.get("error_message"),
            started_at=finished - timedelta(seconds=total),
        )
        self.recorded += 1

    def missing(self, task_ids: Iterable[str]) -> set[str]:
        """The ids among ``task_ids`` that have no task yet."""
        from sqlmodel import Session, col, select

        from app.storage.sql.models import Task

        ids = list(task_ids)
        found: set[str] = set()
        with Session(self.engine) as session:
            for i in range(0, len(ids), 500):
                chunk = ids[i : i + 500]
                found.update(session.exec(select(Task.id).where(col(Task.id).in_(chunk))).all())
        return set(ids) - found

    def backfill(self, rows: Iterable[dict]) -> int:
        """Record rows an interrupted run wrote to the output but not to the database."""
        n = 0
        for row in rows:
            if isinstance(row.get("finished_at"), str):
                row["finished_at"] = datetime.fromisoformat(row["finished_at"])
            self.record(row)
            n += 1
        return n

    def close(self) -> None:
        self.engine.dispose()
