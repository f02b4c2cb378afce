"""The one door from the API to tasks and their state.

Routes translate HTTP to and from the calls here and never reach storage
themselves: submit, read, list, follow, wait, cancel, delete, a result's speaker
renames, a task's audio, transcript search, the submission rate limit, and the
tenants behind API keys. A new kind of input (a transcript, a live session)
comes in through :meth:`TaskDoor.submit` as one more source, not as one more
copy of the paths.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, BinaryIO

from app.core.settings import Settings
from app.core.task_vocabulary import InputKind, ProcessingOptions
from app.storage.blobs import BlobNotFound
from app.storage.clients import Services
from app.storage.redis.ratelimit import Decision
from app.storage.sql import keys
from app.storage.sql import search as search_index
from app.storage.sql.models import ApiKey, Task, Tenant
from app.storage.sql.tasks import BadCursor
from app.tasks import removal
from app.tasks.follow import follow, wait_for_terminal
from app.tasks.model_ids import ModelRegistry
from app.tasks.streams import StreamSlot, StreamSlots
from app.tasks.submit import Submission, SubmitRequest, Waker, submit

#: The most hits one search returns.
SEARCH_MAX_LIMIT = search_index.MAX_LIMIT


class InvalidCursor(ValueError):
    """A list cursor this service did not hand out."""


class EmptySearch(ValueError):
    """A search query with no words in it."""


class AudioGone(LookupError):
    """The task has no stored audio (any more)."""


class Tenants:
    """Tenants and their API keys, as the API's authentication needs them."""

    def __init__(self, engine: Any) -> None:
        self.engine = engine

    def ensure(self, name: str) -> Tenant:
        return keys.ensure_tenant(self.engine, name)

    def get(self, tenant_id: str) -> Tenant | None:
        return keys.get_tenant(self.engine, tenant_id)

    def authenticate_key(self, plaintext: str | None) -> tuple[Tenant, ApiKey] | None:
        return keys.authenticate_key(self.engine, plaintext)


class TaskDoor:
    def __init__(
        self, services: Services, models: ModelRegistry, waker: Waker | None = None
    ) -> None:
        self.services = services
        self.models = models
        self.waker = waker
        self.tenants = Tenants(services.engine)
        settings = services.settings
        self.streams = StreamSlots(settings.max_streams_per_tenant, settings.max_streams)

    @classmethod
    def from_settings(
        cls, settings: Settings, models: ModelRegistry, waker: Waker | None = None
    ) -> TaskDoor:
        """Connect this replica's state clients (database, blobs, Redis) and open the door."""
        return cls(Services.from_settings(settings), models, waker)

    @property
    def settings(self) -> Settings:
        return self.services.settings

    # --- a task's life ------------------------------------------------------------

    async def submit(self, request: SubmitRequest) -> Submission:
        return await submit(self.services, self.models, request, self.waker)

    async def get(self, task_id: str, tenant_id: str) -> Task | None:
        return await asyncio.to_thread(self.services.store.get, task_id, tenant_id)

    def list(
        self, tenant_id: str, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[list[Task], str | None]:
        try:
            return self.services.store.list(tenant_id, status=status, limit=limit, cursor=cursor)
        except BadCursor:
            raise InvalidCursor(cursor) from None

    def stream_slot(self, tenant_id: str) -> StreamSlot:
        """Hold one of the tenant's live-stream slots (raises ``TooManyStreams``)."""
        return self.streams.acquire(tenant_id)

    def follow(
        self, task_id: str, *, stop: Callable[[], Awaitable[bool]] | None = None
    ) -> AsyncIterator[dict[str, Any]]:
        return follow(self.services, task_id, stop=stop)

    async def wait(self, task_id: str, timeout_s: float) -> Task | None:
        return await wait_for_terminal(self.services, task_id, timeout_s)

    async def cancel(self, task: Task) -> Task:
        return await removal.cancel(self.services, task)

    async def delete(self, task: Task) -> None:
        await removal.delete(self.services, self.models, task)

    async def replace_result(
        self, task: Task, result: dict[str, Any], expected: dict[str, Any] | None
    ) -> Task | None:
        """Swap a succeeded task's result unless it changed since ``expected`` was read."""
        store = self.services.store
        return await asyncio.to_thread(
            store.replace_result, task.id, task.tenant_id, result, expected
        )

    # --- what a task keeps --------------------------------------------------------

    def open_audio(self, task: Task) -> BinaryIO:
        """The stored audio, to stream (raises :class:`AudioGone`)."""
        if not task.audio_uri:
            raise AudioGone("this task has no stored audio")
        if ProcessingOptions.from_stored(task.options).input != InputKind.AUDIO:
            raise AudioGone("this task was given a transcript, not audio")
        try:
            return self.services.blobs.open(task.audio_uri)
        except BlobNotFound:
            raise AudioGone("the task's audio is no longer stored") from None

    def search(self, tenant_id: str, query: str, limit: int) -> tuple[list[Any], list[str]]:
        """Transcript segments best first, and the words searched for."""
        try:
            hits = search_index.search(self.services.engine, tenant_id, query, limit)
        except search_index.EmptyQuery:
            raise EmptySearch(query) from None
        return hits, search_index.terms(query)

    # --- callers --------------------------------------------------------------------

    def allow_submission(self, who: str) -> Decision | None:
        """Take one token from ``who``'s bucket (``None``: no limiter without Redis)."""
        limiter = self.services.limiter
        if limiter is None:
            return None
        settings = self.settings
        return limiter.allow(f"submit:{who}", settings.rate_limit_per_s, settings.rate_limit_burst)


__all__ = [
    "SEARCH_MAX_LIMIT",
    "AudioGone",
    "EmptySearch",
    "InvalidCursor",
    "TaskDoor",
    "Tenants",
]
