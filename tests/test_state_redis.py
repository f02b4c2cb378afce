"""Redis state against a real redis-server: cache, idempotency, rate limit, events, outages."""

from __future__ import annotations

import asyncio
import threading

import pytest

from app.storage.redis import connect, connect_async, degrade, events
from app.storage.redis.cache import ResultCache, cache_key
from app.storage.redis.degrade import Guard, degraded_counts, reset_degraded_counts
from app.storage.redis.idempotency import (
    IdempotencyStore,
    MalformedIdempotencyKey,
    Outcome,
    fingerprint,
    validate_key,
)
from app.storage.redis.ratelimit import RateLimiter

SHA = "ab" * 32
MODELS = {"stt": "bundled:tiny.en", "llm": "bundled:qwen2.5-0.5b-instruct-q4_k_m"}


# --- cache ------------------------------------------------------------------------------


def test_cache_hit_and_miss(redis_client):
    cache = ResultCache(redis_client, ttl_s=3600)
    opts = {"language": "en", "summary_instruction": "bullets"}
    assert cache.get(SHA, MODELS, opts) is None
    assert cache.set(SHA, MODELS, opts, {"summary": "s", "transcript": "t"}) is True
    assert cache.get(SHA, MODELS, dict(reversed(list(opts.items())))) == {
        "summary": "s",
        "transcript": "t",
    }
    assert cache.get(SHA, MODELS, {**opts, "language": "de"}) is None
    assert cache.get(SHA, {**MODELS, "llm": "other"}, opts) is None
    assert cache.get("cd" * 32, MODELS, opts) is None
    ttl = redis_client.ttl(cache_key(SHA, MODELS, opts))
    assert 0 < ttl <= 3600
    assert cache.delete(SHA, MODELS, opts) is True
    assert cache.get(SHA, MODELS, opts) is None


def test_cache_ignores_corrupt_entries_and_checks_the_hash(redis_client):
    cache = ResultCache(redis_client)
    redis_client.set(cache_key(SHA, MODELS, {}), "{not json")
    assert cache.get(SHA, MODELS, {}) is None
    with pytest.raises(ValueError):
        cache_key("not-a-sha", MODELS, {})


# --- idempotency --------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["", "x" * 256, "caf\u00e9", "tab\there", "new\nline", "   "])
def test_malformed_idempotency_keys(bad):
    with pytest.raises(MalformedIdempotencyKey):
        validate_key(bad)


def test_valid_idempotency_keys():
    for good in ["a", "x" * 255, "8e03978e-40d5-43e8-bc93-6894a57f9324", "with space ~!"]:
        assert validate_key(good) == good


def test_idempotency_same_and_different_requests(redis_client):
    store = IdempotencyStore(redis_client)
    fp = fingerprint("POST", "/v1/tasks", SHA)
    first = store.begin("acme", "key-1", fp)
    assert first.outcome is Outcome.NEW and first.token and not first.degraded
    assert store.begin("acme", "key-1", fp).outcome is Outcome.IN_FLIGHT
    assert store.begin("acme", "key-1", fingerprint("POST", "/v1/tasks", "other")).outcome is (
        Outcome.MISMATCH
    )
    assert store.complete("acme", "key-1", "task-123", token="wrong") is False
    assert store.complete("acme", "key-1", "task-123", token=first.token) is True
    replay = store.begin("acme", "key-1", fp)
    assert (replay.outcome, replay.task_id) == (Outcome.REPLAY, "task-123")
    assert store.begin("acme", "key-1", "different").outcome is Outcome.MISMATCH
    # Completed keys live 24 hours.
    pttl = redis_client.pttl(store.redis_key("acme", "key-1"))
    assert 23 * 3600 * 1000 < pttl <= 24 * 3600 * 1000
    # Another tenant's identical key is independent.
    assert store.begin("globex", "key-1", fp).outcome is Outcome.NEW
    with pytest.raises(MalformedIdempotencyKey):
        store.begin("acme", "", fp)


def test_idempotency_abandon_releases_the_key(redis_client):
    store = IdempotencyStore(redis_client, processing_ttl_s=30)
    first = store.begin("acme", "k", "fp")
    pttl = redis_client.pttl(store.redis_key("acme", "k"))
    assert 0 < pttl <= 30_000  # a crashed owner does not block the key for a day
    assert store.abandon("acme", "k", token=first.token) is True
    again = store.begin("acme", "k", "fp")
    assert again.outcome is Outcome.NEW
    store.complete("acme", "k", "t1", token=again.token)
    assert store.abandon("acme", "k") is False  # completed keys stay
    assert store.begin("acme", "k", "fp").outcome is Outcome.REPLAY


def test_idempotency_concurrent_requests_have_one_owner(redis_url, redis_client):
    n = 12
    barrier = threading.Barrier(n)
    outcomes: list[Outcome] = []
    lock = threading.Lock()

    def request() -> None:
        store = IdempotencyStore(connect(redis_url, socket_timeout_s=5))
        barrier.wait()
        result = store.begin("acme", "race", "same-fp")
        with lock:
            outcomes.append(result.outcome)

    threads = [threading.Thread(target=request) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count(Outcome.NEW) == 1
    assert outcomes.count(Outcome.IN_FLIGHT) == n - 1


# --- rate limit ------------------------------------------------------------------------------


def test_rate_limit_denies_after_burst_with_sane_retry_after(redis_client):
    limiter = RateLimiter(redis_client)
    now = 1_700_000_000_000
    remaining = []
    for _ in range(5):
        d = limiter.allow("key-a", rate_per_s=2.0, burst=5, now_ms=now)
        assert d.allowed
        remaining.append(d.remaining)
    assert remaining == [4, 3, 2, 1, 0]
    denied = limiter.allow("key-a", rate_per_s=2.0, burst=5, now_ms=now)
    assert not denied.allowed
    assert denied.retry_after_s == pytest.approx(0.5)
    assert denied.reset_s == pytest.approx(2.5)
    headers = denied.headers()
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit-Limit"] == "5"
    assert headers["RateLimit-Remaining"] == "0"
    assert headers["RateLimit-Reset"] == "3"
    assert headers["RateLimit-Policy"] == "5;w=3"
    # Other keys have their own bucket.
    assert limiter.allow("key-b", rate_per_s=2.0, burst=5, now_ms=now).allowed
    # Half a second later one token is back.
    later = limiter.allow("key-a", rate_per_s=2.0, burst=5, now_ms=now + 500)
    assert later.allowed and later.remaining == 0
    assert "Retry-After" not in later.headers()


def test_rate_limit_with_redis_clock(redis_client):
    limiter = RateLimiter(redis_client)
    results = [limiter.allow("slow", rate_per_s=0.01, burst=3) for _ in range(4)]
    assert [r.allowed for r in results] == [True, True, True, False]
    assert 0 < results[-1].retry_after_s <= 100
    with pytest.raises(ValueError):
        limiter.allow("slow", rate_per_s=0, burst=3)
    with pytest.raises(ValueError):
        limiter.allow("slow", rate_per_s=1, burst=3, cost=4)


# --- events -------------------------------------------------------------------------------------


def test_events_publish_and_subscribe(redis_url, redis_client):
    async def scenario() -> list[dict]:
        aclient = connect_async(redis_url, socket_timeout_s=5)
        received = []
        try:
            async with events.subscription(aclient, "task-1") as sub:
                assert events.publish(redis_client, "task-1", {"status": "transcribing"}) == 1
                events.publish(redis_client, "task-2", {"status": "succeeded"})  # other task
                events.publish(redis_client, "task-1", {"status": "summarizing", "p": 0.5})
                events.publish(redis_client, "task-1", {"status": "succeeded"})
                events.publish(redis_client, "task-1", {"status": "after-the-end"})
                async for event in sub.events(poll_s=0.1):
                    received.append(event)
        finally:
            await aclient.aclose()
        return received

    received = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert [e["status"] for e in received] == ["transcribing", "summarizing", "succeeded"]
    assert all(e["task_id"] == "task-1" for e in received)
    assert received[1]["p"] == 0.5
    assert events.publish(redis_client, "nobody-listens", {"status": "queued"}) == 0


def test_events_subscribe_generator(redis_url, redis_client):
    async def scenario() -> list[dict]:
        aclient = connect_async(redis_url, socket_timeout_s=5)
        try:
            gen = events.subscribe(aclient, "task-9", poll_s=0.05)
            first = asyncio.ensure_future(gen.__anext__())
            # Publish once the generator's subscription is active.
            while (await aclient.pubsub_numsub(events.channel("task-9")))[0][1] == 0:
                await asyncio.sleep(0.01)
            await events.apublish(aclient, "task-9", {"status": "failed", "error": "x"})
            out = [await first]
            out += [e async for e in gen]
            return out
        finally:
            await aclient.aclose()

    out = asyncio.run(asyncio.wait_for(scenario(), 30))
    assert out == [{"task_id": "task-9", "status": "failed", "error": "x"}]


# --- outages -------------------------------------------------------------------------------------


def test_redis_outage_degrades_and_recovers(fresh_redis):
    reset_degraded_counts()
    hook_calls: list[str] = []
    degrade.on_degraded = hook_calls.append
    try:
        client = connect(fresh_redis.url)
        cache = ResultCache(client, guard=Guard("cache", cooldown_s=0))
        idem = IdempotencyStore(client, guard=Guard("idempotency", cooldown_s=0))
        limiter = RateLimiter(client, guard=Guard("ratelimit", cooldown_s=0))
        ev_guard = Guard("events", cooldown_s=0)

        # Healthy: scripts are loaded, data is written.
        assert cache.set(SHA, MODELS, {}, {"r": 1})
        assert idem.begin("t", "before", "fp").outcome is Outcome.NEW
        assert limiter.allow("k", 1.0, 2).degraded is False

        fresh_redis.stop()
        assert cache.get(SHA, MODELS, {}) is None
        assert cache.set(SHA, MODELS, {}, {"r": 2}) is False
        begun = idem.begin("t", "during", "fp")
        assert begun.outcome is Outcome.NEW and begun.degraded
        assert idem.complete("t", "during", "task") is False
        assert idem.abandon("t", "during") is False
        decision = limiter.allow("k", 1.0, 2)
        assert decision.allowed and decision.degraded and decision.headers() == {}
        assert events.publish(client, "task", {"status": "queued"}, guard=ev_guard) == 0

        counts = degraded_counts()
        assert counts["cache"] == 2
        assert counts["idempotency"] == 3
        assert counts["ratelimit"] == 1
        assert counts["events"] == 1
        assert sorted(set(hook_calls)) == ["cache", "events", "idempotency", "ratelimit"]

        fresh_redis.start()  # same port; the script cache is empty now (NOSCRIPT path)
        assert cache.get(SHA, MODELS, {}) == {"r": 1}  # persisted in the AOF
        assert cache.set(SHA, MODELS, {}, {"r": 3}) is True
        assert idem.begin("t", "before", "fp").outcome is Outcome.IN_FLIGHT
        after = idem.begin("t", "after", "fp")
        assert after.outcome is Outcome.NEW and not after.degraded
        assert limiter.allow("k2", 1.0, 2).degraded is False
        assert degraded_counts() == counts  # nothing degraded after the restart
    finally:
        degrade.on_degraded = None


def test_guard_circuit_skips_redis_during_cooldown():
    now = [100.0]
    guard = Guard("test-circuit", cooldown_s=5, clock=lambda: now[0])
    calls = []

    def broken() -> str:
        calls.append("broken")
        raise ConnectionRefusedError("down")

    def healthy() -> str:
        calls.append("healthy")
        return "redis"

    assert guard.call(broken, lambda: "fallback") == "fallback"
    assert guard.is_open
    assert guard.call(healthy, lambda: "fallback") == "fallback"  # skipped
    now[0] += 5
    assert guard.call(healthy, lambda: "fallback") == "redis"
    assert calls == ["broken", "healthy"]


def test_subscribe_raises_events_unavailable_when_redis_is_down(fresh_redis):
    url = fresh_redis.url
    fresh_redis.stop()

    async def scenario() -> None:
        aclient = connect_async(url)
        try:
            async for _ in events.subscribe(aclient, "t"):
                pass
        finally:
            await aclient.aclose()

    with pytest.raises(events.EventsUnavailable):
        asyncio.run(asyncio.wait_for(scenario(), 30))


def test_embedded_redis_on_a_unix_socket(tmp_path_factory):
    import tempfile

    from app.storage.redis.embedded import start_embedded_redis

    # A short path: AF_UNIX paths are limited to 107 bytes.
    with tempfile.TemporaryDirectory(prefix="aipp-r-") as tmp:
        with start_embedded_redis(tmp, unix_socket=True) as server:
            assert server.url.startswith("unix://")
            client = connect(server.url)
            assert client.ping() is True
            assert client.set("k", "v") and client.get("k") == "v"
            client.close()
        assert not server.running
