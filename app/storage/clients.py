"""The state clients one Ingress or TaskRunner replica needs: database, blobs, Redis."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from sqlalchemy.engine import Engine

from app.core.settings import Settings
from app.storage.blobs import BlobStore
from app.storage.redis import connect, connect_async
from app.storage.redis.cache import ResultCache
from app.storage.redis.idempotency import IdempotencyStore
from app.storage.redis.ratelimit import RateLimiter
from app.storage.sql.engine import make_engine
from app.storage.sql.migrate import upgrade
from app.storage.sql.tasks import TaskStore

logger = logging.getLogger("ray.serve")


@dataclass
class Services:
    settings: Settings
    engine: Engine
    store: TaskStore
    blobs: BlobStore
    cache: ResultCache | None
    idempotency: IdempotencyStore | None
    limiter: RateLimiter | None
    redis: object | None  # redis.Redis (sync)
    aredis: object | None  # redis.asyncio.Redis, for events

    @classmethod
    def from_settings(cls, settings: Settings, migrate: bool = True) -> Services:
        from app.core import metrics
        from app.storage.redis import degrade

        degrade.on_degraded = metrics.record_degraded  # Redis outages show on the dashboard
        settings.data_dir.mkdir(parents=True, exist_ok=True, mode=0o700)  # holds secrets
        url = settings.effective_database_url
        if migrate:
            upgrade(url)
        engine = make_engine(url)
        store = TaskStore(engine, backoff_base_s=settings.task_retry_backoff_s)
        blobs = BlobStore(settings.effective_storage_url)
        redis = aredis = cache = idem = limiter = None
        if settings.redis_url:
            redis = connect(settings.redis_url)
            aredis = connect_async(settings.redis_url)
            if settings.cache_enabled:
                cache = ResultCache(redis, ttl_s=settings.cache_ttl_s)
            idem = IdempotencyStore(redis)
            limiter = RateLimiter(redis)
        else:
            logger.warning("AIPP_REDIS_URL is unset: no result cache, idempotency or rate limits")
        return cls(
            settings=settings,
            engine=engine,
            store=store,
            blobs=blobs,
            cache=cache,
            idempotency=idem,
            limiter=limiter,
            redis=redis,
            aredis=aredis,
        )
