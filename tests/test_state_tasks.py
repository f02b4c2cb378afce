"""TaskStore on real SQLite and real PostgreSQL: lifecycle, queue protocol, pagination."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.storage.sql import keys, search
from app.storage.sql.engine import make_engine
from app.storage.sql.migrate import current_revision, downgrade, head_revision, upgrade
from app.storage.sql.models import SQLModel, TaskSource, TaskStatus, new_id
from app.storage.sql.tasks import (
    BadCursor,
    DuplicateIdempotencyKey,
    InvalidTransition,
    LeaseLost,
    TaskCancelled,
    TaskStore,
    decode_cursor,
    encode_cursor,
)

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)


class Clock:
    def __init__(self, start: datetime = T0) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine, clock) -> TaskStore:
    return TaskStore(engine, backoff_base_s=10, backoff_max_s=1000, clock=clock)


@pytest.fixture
def tenant_id(engine) -> str:
    return keys.ensure_tenant(engine, "acme").id


def _create(store: TaskStore, tenant_id: str, **kw) -> str:
    kw.setdefault("audio_uri", "file:///blobs/x")
    return store.create(tenant_id=tenant_id, **kw).id


# --- schema --------------------------------------------------------------------------


def test_migrations_match_models_and_are_reversible(database_url):
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    upgrade(database_url)
    upgrade(database_url)  # idempotent
    eng = make_engine(database_url)
    try:
        assert current_revision(eng) == head_revision() == "0003"
        with eng.connect() as conn:
            diff = compare_metadata(
                MigrationContext.configure(
                    conn, opts={"compare_type": True, "include_name": search.include_name}
                ),
                SQLModel.metadata,
            )
        assert diff == []
        downgrade(database_url, "base")
        assert current_revision(eng) is None
        upgrade(database_url)
        assert current_revision(eng) == "0003"
    finally:
        eng.dispose()


def test_concurrent_upgrades_are_serialized(database_url):
    # Replicas start together; without the migration lock PostgreSQL would
    # fail with "relation already exists" in all but one of them.
    errors: list[BaseException] = []
    barrier = threading.Barrier(3)

    def run() -> None:
        try:
            barrier.wait()
            upgrade(database_url)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    eng = make_engine(database_url)
    try:
        assert current_revision(eng) == head_revision()
    finally:
        eng.dispose()


def test_postgres_urls_use_psycopg3():
    from app.storage.sql.engine import normalize_url

    for url in ["postgresql://u@h/db", "postgres://u@h/db", "postgresql+psycopg://u@h/db"]:
        assert normalize_url(url).drivername == "postgresql+psycopg"
    assert normalize_url("sqlite:///x.db").drivername == "sqlite"


def test_new_ids_are_sortable_and_unique():
    ids = [new_id() for _ in range(2000)]
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    assert all(len(i) == 26 for i in ids)


# --- lifecycle -------------------------------------------------------------------------


def test_full_lifecycle(store, tenant_id, clock):
    task = store.create(
        tenant_id=tenant_id,
        audio_sha256="a" * 64,
        audio_uri="file:///blobs/a",
        audio_filename="meeting.wav",
        options={"language": "en", "summary_instruction": "bullets"},
        webhook_url="https://example.invalid/hook",
        idempotency_key="k1",
    )
    assert task.status == TaskStatus.QUEUED
    assert task.queued_at == task.created_at == T0
    assert store.count_queued() == 1

    clock.advance(1)
    claimed = store.claim_next("w1", lease_s=30)
    assert claimed is not None and claimed.id == task.id
    assert claimed.status == TaskStatus.TRANSCRIBING
    assert claimed.attempts == 1
    assert claimed.lease_owner == "w1"
    assert claimed.lease_expires_at == T0 + timedelta(seconds=31)
    assert claimed.transcribing_at == T0 + timedelta(seconds=1)
    assert store.claim_next("w2", lease_s=30) is None
    assert store.count_queued() == 0

    clock.advance(2)
    moved = store.transition(task.id, "w1", TaskStatus.SUMMARIZING, duration_s=12.5)
    assert moved.status == TaskStatus.SUMMARIZING
    assert moved.summarizing_at == T0 + timedelta(seconds=3)
    assert moved.duration_s == 12.5

    clock.advance(4)
    done = store.succeed(task.id, "w1", {"transcript": "hi", "summary": {"title": "t"}})
    assert done.status == TaskStatus.SUCCEEDED
    assert done.result == {"transcript": "hi", "summary": {"title": "t"}}
    assert done.finished_at == T0 + timedelta(seconds=7)
    assert done.lease_owner is None and done.lease_expires_at is None
    assert done.options == {"language": "en", "summary_instruction": "bullets"}

    again = store.get(task.id, tenant_id)
    assert again is not None and again.status == TaskStatus.SUCCEEDED
    assert again.created_at.tzinfo is not None
    assert store.claim_next("w1", lease_s=30) is None
    with pytest.raises(LeaseLost):
        store.transition(task.id, "w1", TaskStatus.SUMMARIZING)


def test_claim_is_fifo(store, tenant_id, clock):
    ids = []
    for _ in range(3):
        ids.append(_create(store, tenant_id))
        clock.advance(1)
    got = [store.claim_next(f"w{i}", 60).id for i in range(3)]
    assert got == ids


def test_transition_rules(store, tenant_id):
    tid = _create(store, tenant_id)
    store.claim_next("w1", 60)
    store.transition(tid, "w1", TaskStatus.SUMMARIZING)
    with pytest.raises(InvalidTransition):
        store.transition(tid, "w1", TaskStatus.TRANSCRIBING)
    with pytest.raises(InvalidTransition):
        store.transition(tid, "w1", TaskStatus.QUEUED)
    with pytest.raises(ValueError):
        store.transition(tid, "w1", TaskStatus.SUMMARIZING, lease_owner="me")
    with pytest.raises(LeaseLost):
        store.transition(tid, "intruder", TaskStatus.SUMMARIZING)
    assert store.get(tid).status == TaskStatus.SUMMARIZING


def test_create_needs_audio(store, tenant_id):
    with pytest.raises(ValueError):
        store.create(tenant_id=tenant_id)


def test_create_finished_for_cache_hits_and_batches(store, tenant_id):
    hit = store.create_finished(
        tenant_id=tenant_id,
        result={"summary": "cached"},
        cached=True,
        source=TaskSource.API,
        audio_sha256="b" * 64,
    )
    assert hit.status == TaskStatus.SUCCEEDED and hit.cached and hit.source == "api"
    assert hit.finished_at is not None and hit.attempts == 0
    batch = store.create_finished(tenant_id=tenant_id, result={"summary": "b"})
    assert batch.source == TaskSource.BATCH and not batch.cached
    failed = store.create_finished(
        tenant_id=tenant_id, result=None, status="failed", error_code="bad_audio", source="sync"
    )
    assert failed.status == "failed" and failed.error_code == "bad_audio"
    with pytest.raises(ValueError):
        store.create_finished(tenant_id=tenant_id, result={}, status=TaskStatus.QUEUED)
    assert store.claim_next("w", 60) is None
    assert store.count_queued() == 0


# --- leases, retries, crash recovery ---------------------------------------------------


def test_expired_lease_is_reclaimed_and_old_worker_is_fenced(store, tenant_id, clock):
    tid = _create(store, tenant_id)
    first = store.claim_next("w1", lease_s=30)
    store.transition(tid, "w1", TaskStatus.SUMMARIZING)
    clock.advance(31)  # w1 crashed or stalled
    with pytest.raises(LeaseLost):
        store.renew_lease(tid, "w1", 30)
    second = store.claim_next("w2", lease_s=30)
    assert second is not None and second.id == first.id
    assert second.attempts == 2
    assert second.status == TaskStatus.TRANSCRIBING
    assert second.summarizing_at is None
    with pytest.raises(LeaseLost):
        store.succeed(tid, "w1", {"stale": True})
    done = store.succeed(tid, "w2", {"fresh": True})
    assert done.result == {"fresh": True} and done.attempts == 2


def test_renewed_lease_is_not_reclaimed(store, tenant_id, clock):
    tid = _create(store, tenant_id)
    store.claim_next("w1", lease_s=30)
    clock.advance(20)
    renewed = store.renew_lease(tid, "w1", 30)
    assert renewed.lease_expires_at == clock.now + timedelta(seconds=30)
    clock.advance(20)  # past the first lease, within the renewed one
    assert store.claim_next("w2", lease_s=30) is None
    assert store.transition(tid, "w1", TaskStatus.SUMMARIZING).lease_owner == "w1"


def test_retry_backoff_until_max_attempts(store, tenant_id, clock):
    tid = _create(store, tenant_id, max_attempts=3)
    store.claim_next("w", 60)
    t = store.fail(tid, "w", "stt_error", "boom", retryable=True)
    assert t.status == TaskStatus.QUEUED and t.attempts == 1
    assert t.not_before == clock.now + timedelta(seconds=10)
    assert (t.error_code, t.error_message) == ("stt_error", "boom")
    assert t.lease_owner is None
    assert store.claim_next("w", 60) is None  # backing off
    clock.advance(10)
    assert store.claim_next("w", 60).attempts == 2
    t = store.fail(tid, "w", "stt_error", "boom again", retryable=True)
    assert t.not_before == clock.now + timedelta(seconds=20)
    clock.advance(19)
    assert store.claim_next("w", 60) is None
    clock.advance(1)
    assert store.claim_next("w", 60).attempts == 3
    t = store.fail(tid, "w", "stt_error", "third", retryable=True)
    assert t.status == TaskStatus.FAILED and t.finished_at == clock.now
    assert t.error_message == "third"
    clock.advance(10_000)
    assert store.claim_next("w", 60) is None


def test_non_retryable_failure_is_final(store, tenant_id):
    tid = _create(store, tenant_id, max_attempts=5)
    store.claim_next("w", 60)
    t = store.fail(tid, "w", "bad_audio", "not audio", retryable=False)
    assert t.status == TaskStatus.FAILED and t.attempts == 1
    with pytest.raises(LeaseLost):
        store.fail(tid, "w", "bad_audio", "twice", retryable=False)


def test_worker_lost_on_last_attempt_fails_the_task(store, tenant_id, clock):
    tid = _create(store, tenant_id, max_attempts=1)
    store.claim_next("w1", 30)
    clock.advance(31)
    assert store.claim_next("w2", 30) is None
    t = store.get(tid)
    assert t.status == TaskStatus.FAILED and t.error_code == "worker_lost"
    assert t.finished_at == clock.now


def test_concurrent_claimers_claim_each_task_exactly_once(engine, tenant_id):
    store = TaskStore(engine)
    created = {_create(store, tenant_id) for _ in range(50)}
    claims: dict[str, list[str]] = {}
    errors: list[BaseException] = []
    lock = threading.Lock()
    start = threading.Barrier(4)

    def worker(name: str) -> None:
        try:
            start.wait()
            while (task := store.claim_next(name, lease_s=300)) is not None:
                with lock:
                    claims.setdefault(task.id, []).append(name)
                store.transition(task.id, name, TaskStatus.SUMMARIZING)
                store.succeed(task.id, name, {"by": name})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert set(claims) == created
    assert all(len(who) == 1 for who in claims.values())
    items, _ = store.list(tenant_id, limit=100)
    assert len(items) == 50
    for t in items:
        assert t.status == TaskStatus.SUCCEEDED and t.attempts == 1
        assert t.result == {"by": claims[t.id][0]}


# --- cancel, delete, isolation ------------------------------------------------------------


def test_cancel_queued_and_running(store, tenant_id):
    queued = _create(store, tenant_id)
    running = _create(store, tenant_id)
    t = store.cancel(queued, tenant_id)
    assert t.status == TaskStatus.CANCELLED and t.finished_at is not None
    claimed = store.claim_next("w", 60)
    assert claimed.id == running  # the cancelled one is skipped
    t = store.cancel(running, tenant_id)
    assert t.status == TaskStatus.TRANSCRIBING and t.cancel_requested
    with pytest.raises(TaskCancelled):
        store.transition(running, "w", TaskStatus.SUMMARIZING)
    t = store.get(running)
    assert t.status == TaskStatus.CANCELLED and t.lease_owner is None
    # Finished tasks are left alone.
    assert store.cancel(running).status == TaskStatus.CANCELLED
    assert store.cancel("nope") is None


def test_cancel_requested_then_worker_dies(store, tenant_id, clock):
    tid = _create(store, tenant_id, max_attempts=3)
    store.claim_next("w", 30)
    store.cancel(tid)
    clock.advance(31)
    assert store.claim_next("w2", 30) is None
    assert store.get(tid).status == TaskStatus.CANCELLED


def test_tenant_isolation(store, engine, tenant_id):
    other = keys.ensure_tenant(engine, "globex").id
    mine = _create(store, tenant_id)
    theirs = _create(store, other)
    assert store.get(mine, tenant_id) is not None
    assert store.get(mine, other) is None
    assert [t.id for t in store.list(other)[0]] == [theirs]
    assert [t.id for t in store.list(tenant_id)[0]] == [mine]
    assert store.cancel(mine, other) is None
    assert store.delete(mine, other) is False
    assert store.get(mine).status == TaskStatus.QUEUED


def test_delete(store, tenant_id):
    tid = _create(store, tenant_id, audio_sha256="c" * 64)
    assert store.audio_in_use("c" * 64)
    assert store.delete(tid, tenant_id) is True
    assert store.get(tid) is None
    assert store.delete(tid, tenant_id) is False
    assert not store.audio_in_use("c" * 64)


def test_idempotency_fallback_and_webhook_record(store, tenant_id, clock):
    first = _create(store, tenant_id, idempotency_key="abc")
    clock.advance(1)
    # The unique (tenant, key) index holds the contract without Redis ...
    with pytest.raises(DuplicateIdempotencyKey) as dup:
        _create(store, tenant_id, idempotency_key="abc")
    assert dup.value.existing.id == first
    # ... until the key expires (24 h, like the Redis entry), then it is free again.
    clock.advance(25 * 3600)
    second = _create(store, tenant_id, idempotency_key="abc")
    assert store.find_by_idempotency_key(tenant_id, "abc").id == second
    assert store.find_by_idempotency_key(tenant_id, "abc", since=clock.now + timedelta(1)) is None
    assert store.find_by_idempotency_key(tenant_id, "zzz") is None


# --- listing --------------------------------------------------------------------------------


def test_cursor_pagination_newest_first(store, tenant_id, clock):
    created = []
    for i in range(7):
        created.append(_create(store, tenant_id))
        if i % 2:  # pairs share a created_at: the id breaks the tie
            clock.advance(1)
    seen = []
    cursor = None
    pages = 0
    while True:
        items, cursor = store.list(tenant_id, limit=3, cursor=cursor)
        pages += 1
        seen += [t.id for t in items]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(created))

    store.claim_next("w", 60)  # the oldest is now transcribing
    queued, cur = store.list(tenant_id, status=TaskStatus.QUEUED, limit=100)
    assert cur is None and len(queued) == 6 and created[0] not in {t.id for t in queued}


def test_bad_cursor(store, tenant_id):
    bad = ["!!!", "abc", "e30", encode_cursor(T0, "x")[:-3], "W10", "WyJub3QgYSBkYXRlIiwgIngiXQ"]
    for cursor in bad:
        with pytest.raises(BadCursor):
            store.list(tenant_id, cursor=cursor)
    assert issubclass(BadCursor, ValueError)


@given(st.text(max_size=80))
def test_decode_cursor_only_raises_bad_cursor(text):
    try:
        when, task_id = decode_cursor(text)
    except BadCursor:
        return
    assert when.tzinfo is not None and isinstance(task_id, str)


def test_cursor_round_trip():
    assert decode_cursor(encode_cursor(T0, "01ABC")) == (T0, "01ABC")


# --- blob store (the audio a task points at) --------------------------------------------------


def test_blobstore_local_put_get_delete(tmp_path):
    import hashlib
    import io

    from app.storage.blobs import BlobNotFound, BlobStore

    store = BlobStore(tmp_path / "blobs")
    data = b"RIFF....WAVEfmt " * 1000
    sha, uri = store.put(data)
    assert sha == hashlib.sha256(data).hexdigest()
    assert uri.startswith("file://") and uri.endswith(sha)
    assert store.put(data) == (sha, uri)  # content-addressed: idempotent
    files = [p for p in (tmp_path / "blobs").rglob("*") if p.is_file()]
    assert len(files) == 1
    assert store.get(uri) == data and store.exists(uri)
    assert store.local_path(uri).read_bytes() == data
    with store.open(uri) as fh:
        assert fh.read(4) == b"RIFF"

    sha2, uri2, size = store.put_stream(io.BytesIO(b"abc" * 500_000))
    assert size == 1_500_000 and store.get(uri2) == b"abc" * 500_000
    with pytest.raises(ValueError):
        store.put_stream(io.BytesIO(b"z" * 100), max_bytes=99)
    assert not [p for p in (tmp_path / "blobs" / "tmp").iterdir()]  # no leftovers

    assert store.delete(uri) is True
    assert not store.exists(uri) and store.delete(uri) is False
    with pytest.raises(BlobNotFound):
        store.get(uri)
    # Only this store's blob URIs are accepted (no reading arbitrary files).
    for foreign in ["file:///etc/passwd", f"file://{tmp_path}/blobs/../{sha}", "/etc/hostname"]:
        with pytest.raises(ValueError):
            store.get(foreign)


def test_blobstore_on_another_fsspec_backend():
    from app.storage.blobs import BlobStore

    store = BlobStore(f"memory://aipp-test-{new_id()}")
    sha, uri = store.put(b"hello")
    assert uri.startswith("memory://")
    assert store.get(uri) == b"hello" and store.exists(uri)
    assert store.local_path(uri) is None
    assert store.delete(uri) and not store.exists(uri)
