"""Full-text search over the transcripts of succeeded tasks, one row per segment.

One table name, two implementations (migration ``0003``):

- SQLite: an FTS5 virtual table ``transcript_search`` (``unicode61`` tokenizer,
  diacritics folded), ranked with ``bm25``. A trigger on ``task`` removes a
  deleted task's rows, because virtual tables cannot have foreign keys.
- PostgreSQL: a plain table with a generated ``tsvector`` column under a GIN
  index, ranked with ``ts_rank``; ``ON DELETE CASCADE`` removes a deleted
  task's rows.

Both use language-neutral tokenisation (FTS5 ``unicode61``, PostgreSQL's
``simple`` configuration): transcripts come in any language, and the same
query finds the same segments on either backend. Rows are per segment so a hit
can point at a position in the audio.

:func:`index_transcript` is called when a task succeeds (``TaskStore.succeed`` and
``TaskStore.create_finished``); it replaces the task's rows, so calling it
twice is harmless. Every query filters by tenant: a caller never sees another
tenant's transcripts.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col, select

from app.storage.sql.models import Task, TaskStatus

logger = logging.getLogger(__name__)

TABLE = "transcript_search"
MAX_TERMS = 8
MAX_LIMIT = 100

_WORD = re.compile(r"\w+", re.UNICODE)


class EmptyQuery(ValueError):
    """The query has no searchable word (answer 422)."""


@dataclass(frozen=True)
class Hit:
    task_id: str
    segment: int
    start: float
    end: float
    text: str
    filename: str | None
    created_at: datetime


def include_name(name: str | None, type_: str, _parent: Any = None) -> bool:
    """Alembic ``include_name`` hook: the search table (and FTS5's shadow tables) live
    outside the SQLModel metadata, so autogenerate must neither drop nor diff them."""
    if type_ == "table" and name and (name == TABLE or name.startswith(TABLE + "_")):
        return False
    return True


def terms(query: str) -> list[str]:
    """The words of ``query``, lower-cased, at most :data:`MAX_TERMS`; operators are dropped,
    so user input can never become FTS5 or tsquery syntax."""
    return [w.lower() for w in _WORD.findall(query or "")][:MAX_TERMS]


def _fts5_query(words: list[str]) -> str:
    # Each word quoted (a phrase of one); the last one is a prefix, for search-as-you-type.
    quoted = [f'"{w}"' for w in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def _tsquery(words: list[str]) -> str:
    return " & ".join([*words[:-1], words[-1] + ":*"])


def _segments(task: Task) -> list[dict[str, Any]]:
    result = task.result if isinstance(task.result, dict) else {}
    transcript = result.get("transcript")
    if not isinstance(transcript, dict):  # a result without segments has nothing to index
        return []
    rows = []
    for i, seg in enumerate(transcript.get("segments") or []):
        if not isinstance(seg, dict):
            continue
        text = str(seg.get("text") or "").strip()
        if text:
            rows.append(
                {
                    "task_id": task.id,
                    "tenant_id": task.tenant_id,
                    "segment": int(seg.get("id", i)),
                    "start": float(seg.get("start") or 0.0),
                    "end": float(seg.get("end") or 0.0),
                    "text": text,
                }
            )
    return rows


def _write(conn: Connection, task: Task) -> int:
    conn.execute(sa.text(f"DELETE FROM {TABLE} WHERE task_id = :t"), {"t": task.id})
    rows = _segments(task) if task.status == TaskStatus.SUCCEEDED.value else []
    if rows:
        conn.execute(
            sa.text(
                f'INSERT INTO {TABLE} (task_id, tenant_id, segment, start, "end", text) '
                "VALUES (:task_id, :tenant_id, :segment, :start, :end, :text)"
            ),
            rows,
        )
    return len(rows)


def index_transcript(target: Engine | Session | Connection, task: Task) -> int:
    """Replace ``task``'s rows in the index with its transcript's segments; the count.

    ``target`` is an engine (its own transaction), or a session/connection whose
    transaction the caller commits. Search is a convenience, never a reason for a
    task to fail: errors (e.g. a database not yet migrated to ``0003``) are logged
    and give 0.
    """
    try:
        if isinstance(target, Engine):
            from app.storage.sql.engine import writer

            with writer(target).begin() as conn:
                return _write(conn, task)
        if isinstance(target, Session):
            return _write(target.connection(), task)
        return _write(target, task)
    except sa.exc.SQLAlchemyError:
        logger.warning("could not index task %s for search", task.id, exc_info=True)
        return 0


def reindex(engine: Engine) -> int:
    """Index every succeeded task again (after a restore, or to backfill); the row count."""
    total = 0
    with Session(engine) as session:
        ids = session.exec(select(Task.id).where(Task.status == TaskStatus.SUCCEEDED.value)).all()
    for task_id in ids:
        with Session(engine) as session:
            task = session.get(Task, task_id)
        if task is not None:
            total += index_transcript(engine, task)
    return total


def search(engine: Engine, tenant_id: str, query: str, limit: int = 20) -> list[Hit]:
    """The tenant's best-matching segments for ``query``, best first.

    Every word must occur in the segment (the last one as a prefix). Raises
    :class:`EmptyQuery` when ``query`` has no word.
    """
    words = terms(query)
    if not words:
        raise EmptyQuery("the query has no words to search for")
    limit = max(1, min(int(limit), MAX_LIMIT))
    if engine.dialect.name == "sqlite":
        sql = sa.text(
            f'SELECT task_id, segment, start, "end", text FROM {TABLE} '
            f"WHERE {TABLE} MATCH :q AND tenant_id = :tenant "
            f"ORDER BY bm25({TABLE}), task_id DESC, segment LIMIT :limit"
        )
        params = {"q": _fts5_query(words), "tenant": tenant_id, "limit": limit}
    else:
        sql = sa.text(
            f'SELECT task_id, segment, start, "end", text FROM {TABLE} '
            "WHERE tsv @@ to_tsquery('simple', :q) AND tenant_id = :tenant "
            "ORDER BY ts_rank(tsv, to_tsquery('simple', :q)) DESC, task_id DESC, segment "
            "LIMIT :limit"
        )
        params = {"q": _tsquery(words), "tenant": tenant_id, "limit": limit}
    with engine.connect() as conn:
        rows = conn.execute(sql, params).all()
    if not rows:
        return []
    task_ids = {r.task_id for r in rows}
    with Session(engine) as session:
        # The tenant is checked again on the task itself: defence in depth.
        tasks = {
            t.id: t
            for t in session.exec(
                select(Task).where(col(Task.id).in_(task_ids), Task.tenant_id == tenant_id)
            ).all()
        }
    return [
        Hit(
            task_id=r.task_id,
            segment=int(r.segment),
            start=float(r.start),
            end=float(r.end),
            text=r.text,
            filename=tasks[r.task_id].audio_filename,
            created_at=tasks[r.task_id].created_at,
        )
        for r in rows
        if r.task_id in tasks
    ]


__all__ = [
    "TABLE",
    "EmptyQuery",
    "Hit",
    "include_name",
    "index_transcript",
    "reindex",
    "search",
    "terms",
]
