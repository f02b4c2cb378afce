"""Accepting input as a task, in one place: checks → input → idempotency → blob → cache or
row → wake the runners.

The API layer has authenticated and rate-limited the caller and names the input
(:mod:`app.tasks.sources`); everything here that can refuse raises before the
task row is written (:class:`SubmissionError`, a kind, a code and a message that
``app/api`` maps to HTTP; or the input's own errors), so a refusal never leaves a
half-made task. The cheap checks run first, so a bad header or webhook costs no
upload read. Once the row is committed the answer is 202 and the task will end in
a terminal state.

Idempotency holds with or without Redis: Redis answers fast (and sees requests
still in flight); the database's unique ``(tenant, key)`` index is the last word.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from enum import StrEnum

from app.core import metrics
from app.core.logs import get_logger, log_context
from app.core.task_vocabulary import TaskOptions, TaskSource, TaskStatus
from app.net.url_guard import URLFetchError, check_url, redact_url
from app.storage.clients import Services
from app.storage.redis.idempotency import (
    MalformedIdempotencyKey,
    Outcome,
    fingerprint,
    validate_key,
)
from app.storage.sql.models import Task
from app.storage.sql.tasks import DuplicateIdempotencyKey
from app.tasks import redacted_audio
from app.tasks.announce import announce_terminal, wake_runners
from app.tasks.model_ids import ModelRegistry
from app.tasks.result_cache import cached_result, result_key
from app.tasks.sources import InputSource, TranscriptUpload, load_input

log = get_logger()


class Refusal(StrEnum):
    """Why a submission was refused; ``app/api`` turns each into an HTTP status."""

    BAD_REQUEST = "bad_request"  # malformed header (400)
    INVALID = "invalid"  # a field or the key's reuse is wrong (422)
    IN_FLIGHT = "in_flight"  # the same key is still being handled (409)
    UNAVAILABLE = "unavailable"  # the models are not ready yet; nothing was stored (503)


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
    #: Runners that heard the wake-up over Redis (0: nobody did; the waker was called).
    woken: int = -1


@dataclass(frozen=True)
class SubmitRequest:
    """One submission, whatever door it came in by."""

    tenant_id: str
    options: TaskOptions
    source: InputSource
    origin: TaskSource
    #: The longest audio this door takes (the synchronous route takes less).
    max_minutes: float
    idempotency_key: str | None = None


#: Wakes a runner another way when Redis reached none (the Ingress: the TaskRunner's handle).
Waker = Callable[[], Awaitable[None]]


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


def check_input_options(options: TaskOptions, source: InputSource) -> None:
    """Options that need audio cannot go with a transcript (its speakers are its own)."""
    if isinstance(source, TranscriptUpload) and options.diarize:
        raise SubmissionError(
            Refusal.INVALID,
            "diarize_needs_audio",
            "diarize: a transcript upload keeps the speakers it names; diarization needs audio",
        )


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
    request: SubmitRequest,
    waker: Waker | None = None,
) -> Submission:
    """Check, read and store the input, then create the task (or replay it, or answer from
    the cache) and wake the runners. Raises :class:`SubmissionError` or the input's error."""
    options = request.options
    tenant_id = request.tenant_id
    idem_key = check_idempotency_key(request.idempotency_key)
    check_instruction(options, services)
    check_input_options(options, request.source)
    # Off the event loop: the URL check resolves DNS. Before any input is read.
    await asyncio.to_thread(check_webhook_url, options, services)
    audio = await load_input(request.source, services.settings, request.max_minutes)
    try:
        ids = await models.ids()
    except Exception as exc:  # a replica still starting (or gone): retry, nothing stored
        raise SubmissionError(
            Refusal.UNAVAILABLE,
            "models_not_ready",
            f"the models are not ready ({type(exc).__name__}); retry shortly",
        ) from None
    store = services.store
    # Stored per tenant: one tenant's DELETE can never touch another's audio.
    sha, uri = await asyncio.to_thread(services.blobs.put, audio.data, tenant_id)
    # What the input is comes from the source, never from the caller's fields.
    processing = options.processing().model_copy(update={"input": audio.kind})
    task_opts = processing.stored()
    webhook = str(options.webhook_url) if options.webhook_url else None
    source = request.origin
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
            audio_filename=audio.filename,
            audio_url=options.audio_url,
            duration_s=audio.duration_s,
            options=task_opts,
            webhook_url=webhook,
            idempotency_key=idem_key,
            idempotency_fingerprint=fp if idem_key else None,
            source=source,
        )
        cached = await cached_result(services, result_key(sha, tenant_id, processing, ids))
        if cached is not None and redacted_audio.wanted(processing):
            cached = None  # the runner makes this task's redacted audio (from the cache)
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
    # The row is committed: if a DELETE of the tenant's other task with the same audio
    # retired the blob in between, store it again (BlobStore.retire/ensure).
    await asyncio.to_thread(services.blobs.ensure, uri, audio.data)
    if token is not None:
        await asyncio.to_thread(
            services.idempotency.complete, tenant_id, idem_key, task.id, token=token
        )
    with log_context(task_id=task.id):
        log.info(
            "accepted %s task (%s, %.1fs of audio, status %s)",
            source.value,
            audio.filename or redact_url(options.audio_url),  # no query: it may be a key
            audio.duration_s or 0.0,
            task.status,
        )
    if task.status == TaskStatus.QUEUED:
        woken = await wake_runners(services, "queued")
        if woken == 0 and waker is not None:
            await waker()  # no Redis listener heard it
        return Submission(task, woken=woken)
    # Born finished (a cache hit): its event, metric and webhook like any other end.
    await announce_terminal(services, task)
    return Submission(task)


__all__ = [
    "Refusal",
    "SubmitRequest",
    "Submission",
    "SubmissionError",
    "Waker",
    "check_idempotency_key",
    "check_instruction",
    "check_webhook_url",
    "submit",
]
