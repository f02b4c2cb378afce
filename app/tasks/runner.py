"""The durable task loop that runs inside every Ingress replica.

Tasks wait in the database, not in memory: each replica claims at most
``worker_concurrency`` of them at a time with a lease, renews the lease while
it works, and records every transition. A replica that dies simply stops
renewing; once the lease expires another replica claims the task again, so
every task that was answered 202 ends in a terminal state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from ray.exceptions import RayError

from app.core import metrics
from app.speech.audio import AudioError
from app.storage.sql.models import Task, TaskStatus
from app.storage.sql.tasks import TaskStoreError
from app.tasks.pipeline import Pipeline
from app.storage.redis import events
from app.storage.clients import Services
from app.tasks.webhooks import deliver

logger = logging.getLogger("ray.serve")

TERMINAL = {TaskStatus.SUCCEEDED.value, TaskStatus.FAILED.value, TaskStatus.CANCELLED.value}


def task_options(task: Task) -> dict[str, Any]:
    opts = task.options or {}
    return {k: opts.get(k) for k in ("language", "instruction") if opts.get(k)}


class TaskWorker:
    def __init__(self, services: Services, pipeline: Pipeline) -> None:
        self.services = services
        self.pipeline = pipeline
        self.settings = services.settings
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self._slots = asyncio.Semaphore(self.settings.worker_concurrency)
        self._wake = asyncio.Event()
        self._running: set[asyncio.Task] = set()
        self._waiters: dict[str, asyncio.Future] = {}
        self._loop_task: asyncio.Task | None = None
        self._models: dict[str, str] | None = None

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._loop_task is None:
            self._loop_task = asyncio.get_running_loop().create_task(self._loop())

    async def stop(self) -> None:
        """Stop claiming; running tasks keep their lease until it expires and are re-claimed."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            self._loop_task = None

    def wake(self) -> None:
        self._wake.set()

    async def dispatch(self, task: Task, replayed: bool) -> None:
        """After a submission: wake the loop for a queued task; a task born finished
        (a cache hit) gets its event, metric and webhook like any other."""
        if task.status == TaskStatus.QUEUED.value:
            self.wake()
        elif not replayed:
            await self._finish(task)

    async def models(self) -> dict[str, str]:
        """Model ids for cache keys; asked once from the deployments."""
        if self._models is None:
            info = await self.pipeline.ready()
            self._models = {"stt": info["stt"]["model"], "llm": info["llm"]["model"]}
        return self._models

    async def wait_for(self, task_id: str, timeout_s: float) -> Task:
        """Wait for a task to end: instantly if this replica runs it, else by polling."""
        future = asyncio.get_running_loop().create_future()
        self._waiters[task_id] = future
        try:
            deadline = asyncio.get_running_loop().time() + timeout_s
            while True:
                task = await asyncio.to_thread(self.services.store.get, task_id)
                if task is None or task.status in TERMINAL:
                    return task
                remaining = deadline - asyncio.get_running_loop().time()
                if remaining <= 0:
                    return task
                try:
                    await asyncio.wait_for(asyncio.shield(future), min(remaining, 1.0))
                except TimeoutError:
                    pass
        finally:
            self._waiters.pop(task_id, None)

    # --- the loop ---------------------------------------------------------------

    async def _loop(self) -> None:
        store = self.services.store
        polls = 0
        while True:
            try:
                await self._slots.acquire()
                # Clear before looking: a submission that lands during the claim query
                # sets the event again, so its wake-up is never lost.
                self._wake.clear()
                task = await asyncio.to_thread(
                    store.claim_next, self.worker_id, self.settings.task_lease_s
                )
                if task is None:
                    self._slots.release()
                    polls += 1
                    if polls % 20 == 1:
                        metrics.set_queued_tasks(await asyncio.to_thread(store.count_queued))
                    try:
                        await asyncio.wait_for(self._wake.wait(), self.settings.worker_poll_s)
                    except TimeoutError:
                        pass
                    continue
                job = asyncio.get_running_loop().create_task(self._run(task))
                self._running.add(job)
                job.add_done_callback(self._running.discard)
            except asyncio.CancelledError:
                raise
            except Exception:  # the database blipped: keep the loop alive
                logger.exception("task loop error; retrying")
                self._slots.release()
                await asyncio.sleep(1)

    async def _run(self, task: Task) -> None:
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(task.id))
        try:
            await self._process(task)
        finally:
            heartbeat.cancel()
            self._slots.release()
            waiter = self._waiters.get(task.id)
            if waiter is not None and not waiter.done():
                waiter.set_result(True)

    async def _heartbeat(self, task_id: str) -> None:
        interval = self.settings.task_lease_s / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(
                    self.services.store.renew_lease,
                    task_id,
                    self.worker_id,
                    self.settings.task_lease_s,
                )
            except TaskStoreError:
                return
            except Exception:
                logger.warning("lease renewal failed for %s", task_id, exc_info=True)

    async def publish(self, task_id: str, event: dict[str, Any]) -> None:
        if self.services.aredis is not None:
            await events.apublish(self.services.aredis, task_id, event)

    # --- one task ------------------------------------------------------------------

    async def _process(self, task: Task) -> None:
        store = self.services.store
        wid = self.worker_id
        opts = task_options(task)
        try:
            await self.publish(
                task.id,
                {
                    "status": "transcribing",
                    "attempt": task.attempts,
                    "progress": {"transcribed_s": 0.0, "total_s": task.duration_s},
                },
            )
            models = await self.models()
            cached = await asyncio.to_thread(self._cache_get, task.audio_sha256, models, opts)
            if cached is not None:
                final = await asyncio.to_thread(store.succeed, task.id, wid, cached, cached=True)
                metrics.record_cache(True)
            else:
                metrics.record_cache(False)
                audio = await asyncio.to_thread(self.services.blobs.get, task.audio_uri)

                async def on_stage(stage: str) -> None:
                    if stage == "summarizing":
                        await asyncio.to_thread(
                            store.transition, task.id, wid, TaskStatus.SUMMARIZING
                        )
                        await self.publish(
                            task.id,
                            {
                                "status": "summarizing",
                                "progress": {
                                    "transcribed_s": task.duration_s,
                                    "total_s": task.duration_s,
                                },
                            },
                        )

                result = await self.pipeline.run(
                    audio,
                    language=opts.get("language"),
                    instruction=opts.get("instruction"),
                    on_stage=on_stage,
                    task_id=task.id,
                )
                # Token ids are for verbose_json clients, not worth storing with every task.
                payload = result.model_dump(
                    mode="json", exclude={"transcript": {"segments": {"__all__": {"tokens"}}}}
                )
                final = await asyncio.to_thread(
                    store.succeed, task.id, wid, payload, duration_s=result.transcript.duration_s
                )
                await asyncio.to_thread(self._cache_set, task.audio_sha256, models, opts, payload)
            await self._finish(final)
        except AudioError as exc:
            await self._fail(task, exc.code, exc.message, retryable=False)
        except TaskStoreError as exc:  # lease lost, cancelled or deleted meanwhile
            current = await asyncio.to_thread(store.get, task.id)
            if current is not None and current.status in TERMINAL:
                await self._finish(current)
            logger.info("task %s left this worker: %s", task.id, type(exc).__name__)
        except (RayError, TimeoutError, ConnectionError, OSError) as exc:
            # A replica died, backpressure, a network blip: try again later.
            await self._fail(
                task, "transient_error", f"{type(exc).__name__}: {exc}"[:500], retryable=True
            )
        except Exception as exc:
            logger.exception("task %s failed", task.id)
            await self._fail(
                task, "internal_error", f"{type(exc).__name__}: {exc}"[:500], retryable=True
            )

    def _cache_get(self, sha: str | None, models: dict, opts: dict) -> dict | None:
        if self.services.cache is None or not sha:
            return None
        return self.services.cache.get(sha, models, opts)

    def _cache_set(self, sha: str | None, models: dict, opts: dict, payload: dict) -> None:
        if self.services.cache is not None and sha:
            self.services.cache.set(sha, models, opts, payload)

    async def _fail(self, task: Task, code: str, message: str, retryable: bool) -> None:
        try:
            final = await asyncio.to_thread(
                self.services.store.fail,
                task.id,
                self.worker_id,
                code,
                message,
                retryable=retryable,
            )
        except TaskStoreError:
            final = await asyncio.to_thread(self.services.store.get, task.id)
        if final is not None and final.status in TERMINAL:
            await self._finish(final)
        elif final is not None:
            await self.publish(
                task.id,
                {
                    "status": final.status,
                    "retrying": True,
                    "error": {"code": code, "message": message},
                },
            )

    async def _finish(self, task: Task) -> None:
        """Terminal bookkeeping: event, metric, webhook."""
        metrics.record_task_final(task.status)
        event: dict[str, Any] = {"status": task.status, "cached": bool(task.cached)}
        if task.status == TaskStatus.SUCCEEDED.value and task.result:
            event["summary"] = task.result.get("summary")
        if task.error_code:
            event["error"] = {"code": task.error_code, "message": task.error_message}
        await self.publish(task.id, event)
        if task.webhook_url:
            asyncio.get_running_loop().create_task(self._send_webhook(task))

    async def _send_webhook(self, task: Task) -> None:
        from app.tasks.views import task_view
        from app.storage.sql import keys

        tenant = await asyncio.to_thread(keys.get_tenant, self.services.engine, task.tenant_id)
        if tenant is None:
            return
        payload = {"type": f"task.{task.status}", "data": task_view(task).model_dump(mode="json")}
        attempts = await deliver(
            task.webhook_url,
            payload,
            tenant.webhook_secret,
            max_attempts=self.settings.webhook_max_attempts,
            backoff_s=self.settings.webhook_backoff_s,
            msg_id=f"msg_{task.id}",
            allow=self.settings.url_allow,
        )
        ok = any(a.ok for a in attempts) if attempts else False
        if not ok:
            metrics.record_webhook_failure()
        await asyncio.to_thread(
            self.services.store.record_webhook, task.id, [a.to_dict() for a in attempts], ok
        )


OnStage = Callable[[str], Awaitable[None]]
