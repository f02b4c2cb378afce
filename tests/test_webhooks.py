"""Standard Webhooks signing, verification and delivery against a real local receiver."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from app.tasks.webhooks import (
    WebhookVerificationError,
    build_headers,
    deliver,
    delivered,
    generate_secret,
    sign,
    verify,
)
from tests.servers import LocalHTTPServer, free_port

LOCAL = ["127.0.0.1"]


async def _no_sleep(_seconds: float) -> None:
    return None


def test_known_answer_from_the_standard_webhooks_spec():
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    sig = sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, '{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_sign_verify_round_trip_and_tampering():
    secret = generate_secret()
    assert secret.startswith("whsec_")
    body = b'{"task_id":"t1","status":"succeeded"}'
    now = int(time.time())
    headers = build_headers(secret, "msg_1", body, timestamp=now)
    verify(secret, headers, body, now=now)
    verify(secret, {k.upper(): v for k, v in headers.items()}, body.decode(), now=now + 10)

    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body + b" ", now=now)
    with pytest.raises(WebhookVerificationError):
        verify(generate_secret(), headers, body, now=now)
    with pytest.raises(WebhookVerificationError):
        verify(secret, headers, body, now=now + 3600)  # replayed later
    with pytest.raises(WebhookVerificationError):
        verify(secret, {**headers, "webhook-id": "msg_2"}, body, now=now)
    with pytest.raises(WebhookVerificationError):
        verify(secret, {"webhook-id": "msg_1"}, body, now=now)
    # Secret rotation: several signatures, one valid is enough.
    rotated = {**headers, "webhook-signature": "v1,bm9wZQ== " + headers["webhook-signature"]}
    verify(secret, rotated, body, now=now)
    with pytest.raises(ValueError):
        sign("whsec_not base64!", "m", 1, b"")


def _receiver(statuses: list[int]) -> LocalHTTPServer:
    remaining = list(statuses)

    def route(_req):
        status = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return status, {}, b"ok" if status < 300 else b"nope"

    return LocalHTTPServer(route)


def test_delivery_retries_5xx_then_succeeds():
    secret = generate_secret()
    payload = {"task_id": "t1", "status": "succeeded", "summary": {"title": "Q3"}}
    with _receiver([500, 502, 200]) as server:
        attempts = asyncio.run(
            deliver(
                f"{server.url}/hook",
                payload,
                secret,
                max_attempts=5,
                backoff_s=0.01,
                allow=LOCAL,
                msg_id="msg_fixed",
            )
        )
        received = list(server.requests)
    assert [a.status_code for a in attempts] == [500, 502, 200]
    assert [a.attempt for a in attempts] == [1, 2, 3]
    assert delivered(attempts) and attempts[-1].ok and not attempts[0].ok
    assert attempts[0].error == "HTTP 500" and attempts[-1].error is None
    assert len(received) == 3
    for req in received:
        assert req.method == "POST" and req.path == "/hook"
        assert req.headers["webhook-id"] == "msg_fixed"  # stable across retries
        assert req.headers["content-type"] == "application/json"
        verify(secret, req.headers, req.body)  # each attempt is validly signed
        assert json.loads(req.body) == payload
    stored = attempts[-1].to_dict()
    assert stored["status_code"] == 200 and stored["ok"] is True and "T" in stored["at"]


@pytest.mark.parametrize("status", [400, 401, 404, 410, 422])
def test_delivery_stops_at_once_on_4xx(status):
    with _receiver([status, 200]) as server:
        attempts = asyncio.run(
            deliver(server.url, {"a": 1}, generate_secret(), backoff_s=0.01, allow=LOCAL)
        )
        assert len(server.requests) == 1
    assert len(attempts) == 1 and attempts[0].status_code == status
    assert not delivered(attempts)


def test_delivery_gives_up_after_max_attempts():
    with _receiver([503]) as server:
        attempts = asyncio.run(
            deliver(
                server.url, {"a": 1}, generate_secret(), max_attempts=3, backoff_s=0.01, allow=LOCAL
            )
        )
        assert len(server.requests) == 3
    assert [a.status_code for a in attempts] == [503, 503, 503]
    assert not delivered(attempts)


def test_delivery_retries_connection_errors_with_growing_backoff():
    delays: list[float] = []

    async def record_sleep(seconds: float) -> None:
        delays.append(seconds)

    closed_port = free_port()  # nothing listens there
    attempts = asyncio.run(
        deliver(
            f"http://127.0.0.1:{closed_port}/",
            {"a": 1},
            generate_secret(),
            max_attempts=4,
            backoff_s=1.0,
            backoff_max_s=3.0,
            allow=LOCAL,
            sleep=record_sleep,
        )
    )
    assert len(attempts) == 4
    assert all(a.status_code is None and a.error for a in attempts)
    assert delays == [1.0, 2.0, 3.0]


def test_delivery_refuses_internal_urls_without_allow_list():
    with _receiver([200]) as server:
        attempts = asyncio.run(deliver(server.url, {"a": 1}, generate_secret(), sleep=_no_sleep))
        assert server.requests == []
    assert len(attempts) == 1 and "url_not_allowed" in attempts[0].error
    refused = asyncio.run(deliver("ftp://example.invalid/x", {}, generate_secret()))
    assert "invalid_url_scheme" in refused[0].error
