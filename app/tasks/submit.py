"""Accepting audio as a task: idempotency → blob → cache or row → wake the runners.

The API layer has already authenticated, rate-limited, read and measured the
audio; everything here that can refuse raises :class:`SubmissionError` (a kind,
a code and a message; ``app/api`` maps kinds to HTTP) before the task row is
written, so a refusal never leaves a half-made task. Once the row is committed
the answer is 202 and the task will end in a terminal state.

Idempotency holds with or without Redis: Redis answers fast (and sees requests
still in flight); the database's unique ``(tenant, key)`` index is the last word.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from enum import StrEnum

from app.core import metrics
from app.core.logs import get_logger, log_context
from app.net.url_guard import URLFetchError, check_url
from app.storage.clients import Services
from app.storage.redis.idempotency import (
    MalformedIdempotencyKey,
    Outcome,
    fingerprint,
    validate_key,
)
from app.storage.sql.models import Task, TaskSource, TaskStatus
from app.storage.sql.tasks import DuplicateIdempotencyKey
from app.tasks.announce import announce_terminal, wake_runners
from app.tasks.model_ids import ModelRegistry
from app.tasks.options import TaskOptions

log = get_logger()


class Refusal(StrEnum):
    """Why a submission was refused; ``app/api`` turns each into an HTTP status."""

    BAD_REQUEST = "bad_request"  # malformed header (400)
    INVALID = "invalid"  # a field or the key's reuse is wrong (422)
    IN_FLIGHT = "in_flight"  # the same key is still being handled (409)


class SubmissionError(Exception):
    def __init__(self, kind: Refusal, code: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.code = code
        self.message = message


@dataclass
class Submission:
    task: Task
    replayed: bool = False
    #: Runners that heard the wake-up (0: Redis is down or unset; wake them another way).
    woken: int = -1


def check_idempotency_key(key: str | None) -> str | None:
    """Validate the header before any work (raises :class:`SubmissionError`)."""
    if key is None:
        return None
    try:
        return validate_key(key)
    except MalformedIdempotencyKey as exc:
        raise SubmissionError(Refusal.BAD_REQUEST, "invalid_idempotency_key", str(exc)) from None


# What a summary call needs besides the instruction: the system prompt, the output, and
# room for at least some transcript (tokens).
PROMPT_RESERVE_TOKENS = 1024


def check_instruction(options: TaskOptions, services: Services) -> None:
    """Refuse now an instruction the model's context cannot hold (it would fail later).

    Tokens are estimated as UTF-8 bytes / 3, generous for English and most scripts.
    """
    if not options.instruction:
        return
    settings = services.settings
    budget = settings.llm_context_tokens - settings.llm_max_output_tokens - PROMPT_RESERVE_TOKENS
    estimate = len(options.instruction.encode()) // 3
    if estimate > budget:
        raise SubmissionError(
            Refusal.INVALID,
            "instruction_too_long",
            f"instruction: about {estimate} tokens; the model's context "
            f"(AIPP_LLM_CONTEXT_TOKENS={settings.llm_context_tokens}) leaves room for "
            f"{max(budget, 0)}",
        )


def check_webhook_url(options: TaskOptions, services: Services) -> None:
    """Refuse an internal or malformed webhook_url now, not silently at delivery."""
    if options.webhook_url is None:
        return
    try:
        check_url(str(options.webhook_url), services.settings.url_allow)
    except URLFetchError as exc:
        raise SubmissionError(
            Refusal.INVALID, f"webhook_{exc.code}", f"webhook_url: {exc.message}"
        ) from None


def _replay(task: Task, fp: str) -> Submission:
    if task.idempotency_fingerprint and task.idempotency_fingerprint != fp:
        raise SubmissionError(
            Refusal.INVALID,
            "idempotency_key_reused",
            "this Idempotency-Key was used with a different request",
        )
    return Submission(task, replayed=True)


async def submit(
    services: Services,
    models: ModelRegistry,
    *,
    tenant_id: str,
    options: TaskOptions,
    audio: bytes,
    duration_s: float | None,
    filename: str | None,
    idempotency_key: str | None,
    source: TaskSource,
) -> Submission:
    """Store the audio, create the task (or replay it / answer from the cache), and wake
    the runners. Raises :class:`SubmissionError`."""
    idem_key = check_idempotency_key(idempotency_key)
    check_instruction(options, services)
    check_webhook_url(options, services)
    ids = await models.ids()
    store = services.store
    sha, uri = await asyncio.to_thread(services.blobs.put, audio)
    task_opts = options.stored()
    webhook = str(options.webhook_url) if options.webhook_url else None
    fp = fingerprint(source.value, sha, json.dumps(task_opts, sort_keys=True), webhook or "")

    token = None
    if idem_key is not None:
        if services.idempotency is not None:
            begun = await asyncio.to_thread(services.idempotency.begin, tenant_id, idem_key, fp)
        else:
            begun = None
        if begun is not None and begun.outcome == Outcome.MISMATCH:
            raise SubmissionError(
                Refusal.INVALID,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
        if begun is not None and begun.outcome == Outcome.IN_FLIGHT:
            raise SubmissionError(
                Refusal.IN_FLIGHT,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed",
            )
        if begun is not None and begun.outcome == Outcome.REPLAY and begun.task_id:
            task = await asyncio.to_thread(store.get, begun.task_id, tenant_id)
            if task is not None:
                return Submission(task, replayed=True)
        if begun is None or begun.degraded or begun.outcome == Outcome.REPLAY:
            # Redis is unavailable (or forgot): the database is the durable record.
            since = store.clock() - store.idempotency_ttl
            found = await asyncio.to_thread(
                store.find_by_idempotency_key, tenant_id, idem_key, since=since
            )
            if found is not None:
                return _replay(found, fp)
        token = begun.token if begun is not None else None

    try:
        common = dict(
            tenant_id=tenant_id,
            audio_sha256=sha,
            audio_uri=uri,
            audio_filename=filename,
            audio_url=options.audio_url,
            duration_s=duration_s,
            options=task_opts,
            webhook_url=webhook,
            idempotency_key=idem_key,
            idempotency_fingerprint=fp if idem_key else None,
            source=source,
        )
        cached = None
        if services.cache is not None:
            cached = await asyncio.to_thread(
                lambda: services.cache.get(sha, ids, task_opts, tenant=tenant_id)
            )
        metrics.record_cache(cached is not None)
        try:
            if cached is not None:
                task = await asyncio.to_thread(
                    lambda: store.create_finished(result=cached, cached=True, **common)
                )
            else:
                task = await asyncio.to_thread(
                    lambda: store.create(max_attempts=services.settings.task_max_attempts, **common)
                )
        except DuplicateIdempotencyKey as dup:
            # A concurrent request (another replica, or Redis down) won the key.
            if dup.existing is None:
                raise SubmissionError(
                    Refusal.IN_FLIGHT,
                    "idempotency_key_in_flight",
                    "a request with this Idempotency-Key is still being processed",
                ) from None
            return _replay(dup.existing, fp)
    except BaseException:
        if token is not None:
            await asyncio.to_thread(services.idempotency.abandon, tenant_id, idem_key, token=token)
        raise
    if token is not None:
        await asyncio.to_thread(
            services.idempotency.complete, tenant_id, idem_key, task.id, token=token
        )
    with log_context(task_id=task.id):
        log.info(
            "accepted %s task (%s, %.1fs of audio, status %s)",
            source.value,
            filename or options.audio_url,
            duration_s or 0.0,
            task.status,
        )
    if task.status == TaskStatus.QUEUED:
        return Submission(task, woken=await wake_runners(services, "queued"))
    # Born finished (a cache hit): its event, metric and webhook like any other end.
    await announce_terminal(services, task)
    return Submission(task)


__all__ = [
    "Refusal",
    "Submission",
    "SubmissionError",
    "check_idempotency_key",
    "check_instruction",
    "check_webhook_url",
    "submit",
]
