"""Nothing lost, nothing silent: every terminal path is announced, webhooks are durable.

Two halves. The store half runs the queue protocol on real SQLite and real
PostgreSQL (outbox exactly-once, lease release, expiry reaping, retention,
the unique idempotency index). The service half runs against `aipp serve`
(real Ray, models, Redis) and checks each class through HTTP: cancel and
DELETE close SSE streams and send their webhook, an internal webhook_url is a
422, webhooks survive a receiver outage, idempotency holds with Redis down,
the result cache does not leak across tenants, and the service keeps answering.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlmodel import Session, select

from app.storage.sql import keys
from app.storage.sql.models import TaskStatus, WebhookDelivery, WebhookState
from app.storage.sql.tasks import DuplicateIdempotencyKey, TaskStore
from app.tasks.webhooks import generate_secret, send_once, verify
from tests.conftest import DATA, make_key
from tests.servers import LocalHTTPServer

T0 = datetime(2025, 1, 1, 12, 0, 0, tzinfo=UTC)

from tests.test_state_tasks import Clock  # noqa: E402  (one fake clock for the store)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine, clock) -> TaskStore:
    return TaskStore(engine, backoff_base_s=10, clock=clock)


@pytest.fixture
def tenant_id(engine) -> str:
    return keys.ensure_tenant(engine, "acme").id


def _create(store: TaskStore, tenant_id: str, **kw):
    kw.setdefault("audio_uri", "file:///blobs/x")
    return store.create(tenant_id=tenant_id, **kw)


# --- the store half ------------------------------------------------------------------


def test_webhook_outbox_is_one_message_per_task_and_status(store, tenant_id):
    task = _create(store, tenant_id, webhook_url="https://example.invalid/hook")
    store.claim_next("w", 60)
    done = store.succeed(task.id, "w", {"summary": {"title": "t"}})
    first = store.enqueue_webhook(done, {"type": "task.succeeded"}, max_attempts=3)
    again = store.enqueue_webhook(done, {"type": "task.succeeded"}, max_attempts=3)
    assert first is not None and again is not None and again.id == first.id
    assert first.msg_id == f"msg_{task.id}_succeeded"
    with Session(store.engine) as session:
        rows = session.exec(select(WebhookDelivery).where(WebhookDelivery.task_id == task.id))
        assert len(rows.all()) == 1
    assert store.get(task.id).webhook_status == "pending"
    # Two replicas race for it: only one gets the lease.
    a = store.claim_webhooks("replica-a", lease_s=30)
    b = store.claim_webhooks("replica-b", lease_s=30)
    assert [r.id for r in a] == [first.id] and b == []


def test_webhook_retry_backoff_then_delivered_and_visible(store, tenant_id, clock):
    task = _create(store, tenant_id, webhook_url="https://example.invalid/hook")
    store.claim_next("w", 60)
    done = store.fail(task.id, "w", "bad_audio", "no", retryable=False)
    row = store.enqueue_webhook(done, {"type": "task.failed"}, max_attempts=3)
    [claimed] = store.claim_webhooks("w", 30)
    after = store.record_webhook_attempt(
        claimed.id, "w", {"attempt": 1, "status_code": 503}, ok=False, retryable=True, backoff_s=4
    )
    assert after.state == WebhookState.PENDING and after.attempts == 1
    assert after.next_attempt_at == clock.now + timedelta(seconds=4)
    assert store.claim_webhooks("w", 30) == []  # not due yet
    assert store.next_due() == clock.now + timedelta(seconds=4)
    clock.advance(5)
    [claimed] = store.claim_webhooks("other-replica", 30)  # any live replica may send it
    after = store.record_webhook_attempt(
        claimed.id,
        "other-replica",
        {"attempt": 2, "status_code": 200},
        ok=True,
        retryable=False,
        backoff_s=4,
    )
    assert after.state == WebhookState.DELIVERED and after.id == row.id
    visible = store.get(task.id)
    assert visible.webhook_status == "delivered"
    assert [a["status_code"] for a in visible.webhook_attempts] == [503, 200]
    # A stale lease holder cannot record over it.
    assert (
        store.record_webhook_attempt(row.id, "w", {}, ok=True, retryable=False, backoff_s=1) is None
    )


def test_refused_webhook_fails_for_good(store, tenant_id):
    task = _create(store, tenant_id, webhook_url="https://example.invalid/hook")
    store.cancel(task.id)
    row = store.enqueue_webhook(store.get(task.id), {"type": "task.cancelled"}, max_attempts=5)
    assert row.event == "task.cancelled"
    [claimed] = store.claim_webhooks("w", 30)
    after = store.record_webhook_attempt(
        claimed.id, "w", {"status_code": 410}, ok=False, retryable=False, backoff_s=1
    )
    assert after.state == WebhookState.FAILED
    assert store.get(task.id).webhook_status == WebhookState.FAILED


def test_unscheduled_webhooks_are_found_by_the_sweep(store, tenant_id):
    task = _create(store, tenant_id, webhook_url="https://example.invalid/hook")
    plain = _create(store, tenant_id)
    for t in (task, plain):
        store.cancel(t.id)
    assert [t.id for t in store.unscheduled_webhooks()] == [task.id]
    store.enqueue_webhook(store.get(task.id), {}, max_attempts=1)
    assert store.unscheduled_webhooks() == []


def test_release_hands_the_task_back_without_spending_an_attempt(store, tenant_id):
    task = _create(store, tenant_id, max_attempts=1)
    claimed = store.claim_next("w1", 60)
    assert claimed.attempts == 1
    assert store.release(task.id, "w1") is True
    again = store.get(task.id)
    assert again.status == TaskStatus.QUEUED and again.attempts == 0 and again.lease_owner is None
    assert store.release(task.id, "w1") is False  # no longer ours
    reclaimed = store.claim_next("w2", 60)  # at once: no lease to wait for
    assert reclaimed.id == task.id and reclaimed.attempts == 1


def test_autoscaling_counts_only_tasks_that_can_run_now(store, tenant_id, clock):
    ready = _create(store, tenant_id)
    waiting = _create(store, tenant_id, max_attempts=3)
    store.claim_next("w", 60)  # claims `ready` (FIFO)
    store.claim_next("w", 60)
    store.fail(waiting.id, "w", "transient_error", "blip", retryable=True)  # backoff 10 s
    store.fail(ready.id, "w", "transient_error", "blip", retryable=True)
    assert store.count_queued() == 2
    assert store.count_queued(ready_only=True) == 0  # both in backoff: no replica needed
    clock.advance(11)
    assert store.count_queued(ready_only=True) == 2


def test_expiry_reaping_reports_what_it_finished(store, tenant_id, clock):
    lost = _create(store, tenant_id, max_attempts=1)
    store.claim_next("w1", 30)
    cancelled = _create(store, tenant_id, max_attempts=3)
    store.claim_next("w1", 30)
    store.cancel(cancelled.id)
    assert store.next_due() == clock.now + timedelta(seconds=30)
    clock.advance(31)
    reaped: list[str] = []
    assert store.claim_next("w2", 30, reaped) is None
    assert sorted(reaped) == sorted([lost.id, cancelled.id])
    assert store.get(lost.id).status == TaskStatus.FAILED
    assert store.get(cancelled.id).status == TaskStatus.CANCELLED


def test_retention_purges_per_tenant(store, engine, tenant_id, clock):
    from sqlmodel import Session

    from app.storage.sql.models import Tenant

    short = keys.ensure_tenant(engine, "short-lived").id
    with Session(engine) as session:
        tenant = session.get(Tenant, short)
        tenant.retention_days = 1
        session.add(tenant)
        session.commit()
    mine = _create(store, tenant_id)
    theirs = _create(store, short)
    running = _create(store, short)
    for t in (mine, theirs):
        store.cancel(t.id)
    store.claim_next("w", 10**6)  # `running` stays running: never purged
    clock.advance(2 * 86400)
    purged = store.purge_expired(default_days=30)
    assert [t.id for t in purged] == [theirs.id]
    assert store.get(theirs.id) is None and store.get(mine.id) is not None
    assert store.get(running.id) is not None
    clock.advance(31 * 86400)
    assert [t.id for t in store.purge_expired(default_days=30)] == [mine.id]


def test_retention_cannot_starve_a_short_lived_tenant(store, engine, tenant_id, clock):
    """Thousands of old tasks of a long-retention tenant come first by age; the short-lived
    tenant's expired ones must still go (a single oldest-first page never reached them)."""
    from sqlmodel import Session

    from app.storage.sql.models import Tenant

    short = keys.ensure_tenant(engine, "short-lived").id
    with Session(engine) as session:
        for tid, days in ((tenant_id, 365), (short, 1)):
            tenant = session.get(Tenant, tid)
            tenant.retention_days = days
            session.add(tenant)
        session.commit()
    for _ in range(2100):  # older than anything of the short-lived tenant, kept a year
        store.create_finished(tenant_id=tenant_id, result=None, audio_uri="file:///b/x")
    clock.advance(20 * 86400)
    theirs = [
        store.create_finished(tenant_id=short, result=None, audio_uri="file:///b/y")
        for _ in range(3)
    ]
    clock.advance(2 * 86400)
    purged = store.purge_expired(default_days=30)
    assert sorted(t.id for t in purged) == sorted(t.id for t in theirs)
    assert store.purge_expired(default_days=30) == []
    # A year on, the long-lived tenant's tasks go too, a fair share per call.
    clock.advance(400 * 86400)
    batches = []
    while batch := store.purge_expired(default_days=30, limit=500):
        batches.append(len(batch))
    assert sum(batches) == 2100 and max(batches) <= 500


def test_idempotency_key_is_unique_per_tenant_in_the_database(store, engine, tenant_id):
    first = _create(store, tenant_id, idempotency_key="k1", idempotency_fingerprint="f" * 64)
    with pytest.raises(DuplicateIdempotencyKey) as dup:
        _create(store, tenant_id, idempotency_key="k1")
    assert dup.value.existing.id == first.id
    other = keys.ensure_tenant(engine, "globex").id
    assert _create(store, other, idempotency_key="k1").id != first.id  # per tenant


def test_concurrent_duplicate_keys_create_one_task(store, tenant_id):
    winners: list[str] = []
    losers: list[str] = []
    barrier = threading.Barrier(4)

    def go() -> None:
        barrier.wait()
        try:
            winners.append(_create(store, tenant_id, idempotency_key="race").id)
        except DuplicateIdempotencyKey as exc:
            losers.append(exc.existing.id)

    threads = [threading.Thread(target=go) for _ in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert len(winners) == 1 and set(losers) == set(winners) and len(losers) == 3


def test_webhook_reply_is_capped_and_deadline_holds():
    """A receiver streaming an endless reply, or never finishing it, cannot hold the sender."""

    def endless(_req):
        def chunks():
            for _ in range(10**6):
                yield b"x" * 65536

        return 200, {}, chunks()

    secret = generate_secret()
    with LocalHTTPServer(endless) as server:
        started = time.monotonic()
        attempt = asyncio.run(
            send_once(server.url, {"a": 1}, secret, msg_id="m1", allow=["127.0.0.1"], timeout_s=5)
        )
        assert attempt.ok and time.monotonic() - started < 5
        verify(secret, server.requests[0].headers, server.requests[0].body)

    def slow(_req):
        def chunks():
            while True:
                time.sleep(0.5)
                yield b"."

        return 500, {}, chunks()

    with LocalHTTPServer(slow) as server:
        started = time.monotonic()
        attempt = asyncio.run(
            send_once(
                server.url,
                {"a": 1},
                secret,
                msg_id="m2",
                allow=["127.0.0.1"],
                timeout_s=1.5,
                max_response_bytes=10**9,
            )
        )
        assert time.monotonic() - started < 4
        assert not attempt.ok and attempt.retryable and attempt.status_code == 500


# --- the service half ----------------------------------------------------------------

JFK = (DATA / "jfk.flac").read_bytes()
LONG = (DATA / "multilingual.mp3").read_bytes()
TERMINAL = {"succeeded", "failed", "cancelled"}


def _client(service, tenant: str) -> httpx.Client:
    key = make_key(service, tenant)
    return httpx.Client(
        base_url=service.url, timeout=300, headers={"Authorization": f"Bearer {key}"}
    )


def _wait(client: httpx.Client, task_id: str, pred, timeout_s: float = 300) -> dict:
    deadline = time.monotonic() + timeout_s
    body: dict = {}
    while time.monotonic() < deadline:
        r = client.get(f"/v1/tasks/{task_id}")
        if r.status_code == 404:
            return {"status": "deleted"}
        body = r.json()
        if pred(body):
            return body
        time.sleep(0.2)
    raise AssertionError(f"timed out: {body}")


def _receiver(statuses: list[int] | None = None) -> LocalHTTPServer:
    remaining = list(statuses or [200])

    def route(_req):
        status = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return status, {}, b"ok"

    return LocalHTTPServer(route)


def _sse_final(client: httpx.Client, task_id: str, out: list[dict]) -> None:
    with client.stream("GET", f"/v1/tasks/{task_id}/events", timeout=120) as resp:
        for line in resp.iter_lines():
            if line.startswith("data: "):
                out.append(json.loads(line[6:]))


@pytest.mark.serve
@pytest.mark.parametrize("how", ["cancel", "delete"])
def test_cancel_and_delete_close_the_stream_and_send_the_webhook(service, how):
    with _client(service, f"g-{how}-{time.monotonic_ns()}") as client, _receiver() as hook:
        r = client.post(
            "/v1/tasks",
            files={"file": ("long.mp3", LONG)},
            data={"webhook_url": f"{hook.url}/h", "instruction": f"guarantee {how}"},
        )
        assert r.status_code == 202, r.text
        task_id = r.json()["id"]
        _wait(client, task_id, lambda t: t["status"] == "transcribing")
        events: list[dict] = []
        reader = threading.Thread(target=_sse_final, args=(client, task_id, events))
        reader.start()
        time.sleep(0.5)
        if how == "cancel":
            r = client.post(f"/v1/tasks/{task_id}/cancel")
            assert r.status_code == 202
        else:
            assert client.delete(f"/v1/tasks/{task_id}").status_code == 204
            assert client.get(f"/v1/tasks/{task_id}").status_code == 404
        reader.join(60)
        assert not reader.is_alive(), "the SSE stream never closed"
        assert events and events[-1]["status"] == "cancelled", events
        deadline = time.monotonic() + 30
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.2)
        assert len(hook.requests) == 1
        body = json.loads(hook.requests[0].body)
        assert body["type"] == "task.cancelled" and body["data"]["id"] == task_id
        assert hook.requests[0].headers["webhook-id"] == f"msg_{task_id}_cancelled"
        if how == "cancel":
            final = _wait(client, task_id, lambda t: t["webhook"]["status"] == "delivered")
            assert final["status"] == "cancelled"
        # Still answering other requests.
        assert client.get("/v1/tasks", params={"limit": 1}).status_code == 200


@pytest.mark.serve
def test_internal_webhook_url_is_refused_at_submission(service):
    with _client(service, f"g-ssrf-{time.monotonic_ns()}") as client:
        for url in ["http://10.0.0.1/h", "http://169.254.169.254/latest", "http://[2002:a00:1::]/"]:
            r = client.post("/v1/tasks", files={"file": ("a.flac", JFK)}, data={"webhook_url": url})
            assert r.status_code == 422, (url, r.text)
            assert r.json()["error"]["code"].startswith("webhook_")
        assert client.get("/v1/tasks").json()["data"] == []  # nothing half-made


@pytest.mark.serve
def test_webhook_survives_a_receiver_outage_and_is_visible(service):
    with (
        _client(service, f"g-hook-{time.monotonic_ns()}") as client,
        _receiver([503, 503, 200]) as hook,
    ):
        r = client.post(
            "/v1/tasks",
            files={"file": ("a.flac", JFK)},
            data={"webhook_url": f"{hook.url}/h", "instruction": "outbox", "summarize": "false"},
        )
        task_id = r.json()["id"]
        final = _wait(
            client,
            task_id,
            lambda t: t["status"] in TERMINAL and (t["webhook"] or {}).get("status") == "delivered",
            timeout_s=300,
        )
        assert final["status"] == "succeeded"
        assert [a["status_code"] for a in final["webhook"]["attempts"]] == [503, 503, 200]
        ids = {req.headers["webhook-id"] for req in hook.requests}
        assert ids == {f"msg_{task_id}_succeeded"}  # one message, however many attempts


@pytest.mark.serve
def test_idempotency_holds_with_redis_down(service, service_redis):
    with _client(service, f"g-idem-{time.monotonic_ns()}") as client:
        service_redis.stop()
        try:
            headers = {"Idempotency-Key": f"k-{time.monotonic_ns()}"}
            first = client.post(
                "/v1/tasks",
                files={"file": ("a.flac", JFK)},
                headers=headers,
                data={"instruction": "idem without redis", "summarize": "false"},
            )
            second = client.post(
                "/v1/tasks",
                files={"file": ("a.flac", JFK)},
                headers=headers,
                data={"instruction": "idem without redis", "summarize": "false"},
            )
            other = client.post(
                "/v1/tasks",
                files={"file": ("a.flac", JFK)},
                headers=headers,
                data={"instruction": "a different request"},
            )
        finally:
            service_redis.start()
        assert first.status_code == 202, first.text
        assert second.status_code == 202 and second.json()["id"] == first.json()["id"]
        assert other.status_code == 422
        assert other.json()["error"]["code"] == "idempotency_key_reused"
        _wait(client, first.json()["id"], lambda t: t["status"] in TERMINAL)


@pytest.mark.serve
def test_result_cache_is_scoped_per_tenant(service):
    # Transcript only: the cache's scope is the subject, three summaries would cost minutes.
    form = {"instruction": f"cache scope {time.monotonic_ns()}", "summarize": "false"}
    with (
        _client(service, f"g-a-{time.monotonic_ns()}") as a,
        _client(service, f"g-b-{time.monotonic_ns()}") as b,
    ):
        first = a.post("/v1/tasks", files={"file": ("a.flac", JFK)}, data=form)
        done = _wait(a, first.json()["id"], lambda t: t["status"] in TERMINAL)
        assert done["status"] == "succeeded"
        again = a.post("/v1/tasks", files={"file": ("a.flac", JFK)}, data=form)
        assert again.json()["cached"] is True  # same tenant: served from the cache
        theirs = b.post("/v1/tasks", files={"file": ("a.flac", JFK)}, data=form)
        assert theirs.json()["cached"] is False  # another tenant learns nothing
        # DELETE removes the cached result too: the next upload runs again.
        assert a.delete(f"/v1/tasks/{again.json()['id']}").status_code == 204
        assert a.delete(f"/v1/tasks/{first.json()['id']}").status_code == 204
        fresh = a.post("/v1/tasks", files={"file": ("a.flac", JFK)}, data=form)
        assert fresh.json()["cached"] is False
        for c, r in ((b, theirs), (a, fresh)):
            _wait(c, r.json()["id"], lambda t: t["status"] in TERMINAL)


@pytest.mark.serve
def test_a_lost_lease_stops_the_work_and_the_task_runs_once(service):
    """Another worker takes the lease mid-run: the first runner must stop (no result, no
    webhook from it); when that lease expires the task runs again, one webhook in all."""
    from sqlmodel import Session, col, update

    from app.storage.sql.engine import make_engine
    from app.storage.sql.models import Task

    with _client(service, f"g-lease-{time.monotonic_ns()}") as client, _receiver() as hook:
        r = client.post(
            "/v1/tasks",
            files={"file": ("long.mp3", LONG)},
            data={
                "webhook_url": f"{hook.url}/h",
                "instruction": f"lease {time.monotonic_ns()}",
                "summarize": "false",  # the lease is the subject: no minutes of LLM after it
            },
        )
        task_id = r.json()["id"]
        _wait(client, task_id, lambda t: t["status"] == "transcribing")
        engine = make_engine(f"sqlite:///{service.data_dir / 'aipp.db'}")
        try:
            with Session(engine) as session:
                session.exec(
                    update(Task)
                    .where(col(Task.id) == task_id)
                    .values(
                        lease_owner="another-worker",
                        lease_expires_at=datetime.now(UTC) + timedelta(seconds=25),
                    )
                )
                session.commit()
            # Longer than the clip takes: the first runner would have finished by now.
            time.sleep(20)
            mid = client.get(f"/v1/tasks/{task_id}").json()
            assert mid["status"] in {"transcribing", "summarizing"} and mid["result"] is None
            assert hook.requests == []
        finally:
            engine.dispose()
        final = _wait(client, task_id, lambda t: t["status"] in TERMINAL, timeout_s=300)
        assert final["status"] == "succeeded" and final["attempts"] == 2
        deadline = time.monotonic() + 30
        while not hook.requests and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(2)
        assert [r.headers["webhook-id"] for r in hook.requests] == [f"msg_{task_id}_succeeded"]
