"""Accepting audio as a task: auth'd caller → rate limit → idempotency → audio → row.

Every check that can refuse the request runs before the task row is written,
so a 4xx never leaves a half-made task; once the row is committed the answer
is 202 and the task will end in a terminal state.
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from pydantic import BaseModel, Field, HttpUrl, ValidationError

from app.core import metrics
from app.api.deps import services_of, worker_of
from app.api.uploads import check_audio, read_upload
from app.api.auth import Principal
from app.storage.sql.models import Task, TaskSource
from app.api.errors import APIError
from app.core.logs import get_logger, log_context
from app.storage.redis.idempotency import MalformedIdempotencyKey, Outcome, fingerprint, validate_key
from app.storage.clients import Services
from app.net.url_guard import URLFetchError, check_url, fetch_audio

log = get_logger()


class TaskOptions(BaseModel):
    """Options for POST /v1/tasks (form fields with a file, or a JSON body with audio_url)."""

    # A plain string: the SSRF guard (app/net/url_guard.py) gives scheme/address errors their own codes.
    audio_url: str | None = Field(
        None, max_length=2048, description="http(s) URL to fetch the audio from."
    )
    language: str | None = Field(None, min_length=2, max_length=8, pattern=r"^[a-zA-Z-]+$")
    webhook_url: HttpUrl | None = Field(None, description="Receives the task when it ends.")
    instruction: str | None = Field(
        None, max_length=2000, description="Extra summary instruction, e.g. 'focus on decisions'."
    )

    def task_options(self) -> dict[str, Any]:
        return {
            k: v
            for k, v in {"language": self.language, "instruction": self.instruction}.items()
            if v
        }


@dataclass
class Submission:
    task: Task
    replayed: bool = False


def rate_limit(services: Services, principal: Principal, response: Response | None) -> None:
    if services.limiter is None:
        return
    who = principal.key_id or f"tenant:{principal.tenant_id}"
    settings = services.settings
    decision = services.limiter.allow(
        f"submit:{who}", settings.rate_limit_per_s, settings.rate_limit_burst
    )
    headers = decision.headers()
    if not decision.allowed:
        metrics.record_rate_limited()
        raise APIError(
            429,
            "rate_limited",
            f"too many submissions; retry in {headers.get('Retry-After', '1')} s",
            headers=headers,
        )
    if response is not None:
        response.headers.update(headers)


async def parse_task_request(request: Request) -> tuple[TaskOptions, Any]:
    """Multipart (file + form fields) or JSON (audio_url + options)."""
    ctype = request.headers.get("content-type", "")
    try:
        if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
            form = await request.form()
            fields = {k: v for k, v in form.items() if k != "file" and isinstance(v, str) and v}
            options = TaskOptions.model_validate(fields)
            file = form.get("file")
            if file is not None and isinstance(file, str):
                raise APIError(422, "missing_file", "the field 'file' must be a file upload")
            if file is None and options.audio_url is None:
                raise APIError(
                    422, "missing_file", "send a multipart 'file' or a JSON body with 'audio_url'"
                )
            return options, file
        if ctype.startswith("application/json"):
            try:
                body = await request.json()
            except (json.JSONDecodeError, UnicodeDecodeError):
                raise APIError(400, "invalid_json", "the request body is not valid JSON") from None
            if not isinstance(body, dict):
                raise APIError(422, "invalid_request", "the JSON body must be an object")
            options = TaskOptions.model_validate(body)
            if options.audio_url is None:
                raise APIError(422, "missing_audio_url", "the JSON body needs 'audio_url'")
            return options, None
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first.get("loc", ())) or "request"
        raise APIError(
            422, "invalid_request", f"{field}: {first.get('msg')}", extra={"field": field}
        ) from None
    raise APIError(
        415,
        "unsupported_content_type",
        "use multipart/form-data with a 'file', or application/json with 'audio_url'",
    )


async def load_audio(request_file, options: TaskOptions, services: Services) -> bytes:
    settings = services.settings
    if request_file is not None:
        return await read_upload(request_file, settings)
    url = str(options.audio_url)
    try:
        check_url(url, settings.url_allow)
        data = await fetch_audio(
            url,
            max_bytes=int(settings.max_upload_mb * 1024 * 1024),
            timeout_s=settings.url_fetch_timeout_s,
            allow=settings.url_allow,
        )
    except URLFetchError as exc:
        raise exc.to_api_error() from None
    if not data:
        raise APIError(422, "empty_file", "the audio_url returned an empty body")
    return data


async def submit(
    request: Request,
    principal: Principal,
    options: TaskOptions,
    request_file,
    *,
    source: TaskSource,
    max_minutes: float,
) -> Submission:
    """Validate, store the audio, create the task (or replay / serve from cache), and
    hand it to this replica's worker."""
    services = services_of(request)
    worker = worker_of(request)
    models = await worker.models()
    store = services.store
    idem_key = request.headers.get("idempotency-key")
    if idem_key is not None:
        try:
            validate_key(idem_key)
        except MalformedIdempotencyKey as exc:
            raise APIError(400, "invalid_idempotency_key", str(exc)) from None

    data = await load_audio(request_file, options, services)
    duration = check_audio(data, max_minutes)
    sha, uri = await asyncio.to_thread(services.blobs.put, data)
    task_opts = options.task_options()
    filename = getattr(request_file, "filename", None)

    token = None
    if idem_key is not None and services.idempotency is not None:
        fp = fingerprint(
            source.value, sha, json.dumps(task_opts, sort_keys=True), str(options.webhook_url or "")
        )
        begun = await asyncio.to_thread(
            services.idempotency.begin, principal.tenant_id, idem_key, fp
        )
        if begun.outcome == Outcome.REPLAY and begun.task_id:
            task = await asyncio.to_thread(store.get, begun.task_id, principal.tenant_id)
            if task is not None:
                await worker.dispatch(task, replayed=True)
                return Submission(task, replayed=True)
        elif begun.outcome == Outcome.MISMATCH:
            raise APIError(
                422,
                "idempotency_key_reused",
                "this Idempotency-Key was used with a different request",
            )
        elif begun.outcome == Outcome.IN_FLIGHT:
            raise APIError(
                409,
                "idempotency_key_in_flight",
                "a request with this Idempotency-Key is still being processed",
                headers={"Retry-After": "1"},
            )
        token = begun.token

    try:
        common = dict(
            tenant_id=principal.tenant_id,
            audio_sha256=sha,
            audio_uri=uri,
            audio_filename=filename,
            audio_url=str(options.audio_url) if options.audio_url else None,
            duration_s=duration,
            options=task_opts,
            webhook_url=str(options.webhook_url) if options.webhook_url else None,
            idempotency_key=idem_key,
            source=source,
        )
        cached = None
        if services.cache is not None:
            cached = await asyncio.to_thread(services.cache.get, sha, models, task_opts)
        metrics.record_cache(cached is not None)
        if cached is not None:
            task = await asyncio.to_thread(
                lambda: store.create_finished(result=cached, cached=True, **common)
            )
        else:
            task = await asyncio.to_thread(
                lambda: store.create(max_attempts=services.settings.task_max_attempts, **common)
            )
    except BaseException:
        if token is not None:
            await asyncio.to_thread(
                services.idempotency.abandon, principal.tenant_id, idem_key, token=token
            )
        raise
    if token is not None:
        await asyncio.to_thread(
            services.idempotency.complete, principal.tenant_id, idem_key, task.id, token=token
        )
    with log_context(task_id=task.id):
        log.info(
            "accepted %s task (%s, %.1fs of audio, status %s)",
            source.value,
            filename or options.audio_url,
            duration or 0.0,
            task.status,
        )
    await worker.dispatch(task, replayed=False)
    return Submission(task)
