"""The durable task loop of the TaskRunner deployment (deployments/task_runner.py).

Tasks wait in the database, not in memory: each runner replica claims at most
``worker_concurrency`` of them at a time with a lease, renews the lease while
it works, and records every transition. A replica that dies simply stops
renewing; once the lease expires another replica claims the task again, so
every task that was answered 202 ends in a terminal state.

The loop sleeps until something happens: a Redis wake-up (the Ingress
publishes one per queued task), the next due time known to the database (a
retry backoff, a lease expiring, a webhook retry), or the slow fallback poll
(``AIPP_WORKER_POLL_S``). Beside it run the webhook outbox sender and the
retention purge. Losing a lease (or a cancel) cancels the pipeline call; a
graceful shutdown hands running tasks back to the queue without spending an
attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import uuid
from typing import Any

from ray.exceptions import RayError

from app.core import metrics
from app.core.settings import Settings
from app.core.task_vocabulary import (
    InputKind,
    ProcessingOptions,
    TaskStatus,
    event_of,
    task_event,
)
from app.speech.audio import AudioError
from app.speech.transcript_files import TranscriptFileError, parse_transcript
from app.storage.clients import Services
from app.storage.redis import events
from app.storage.sql.models import Task
from app.storage.sql.tasks import LeaseLost, TaskCancelled, TaskNotFound, TaskStoreError
from app.tasks import redacted_audio
from app.tasks.announce import announce_terminal, publish, wake_runners
from app.tasks.model_ids import ModelRegistry
from app.tasks.outbox import WebhookSender
from app.tasks.pipeline import Pipeline
from app.tasks.removal import forget
from app.tasks.result_cache import cached_result, keep_result, key_of
from app.tasks.waiting import sleep_until_due

logger = logging.getLogger("ray.serve")


class TaskWorker:
    def __init__(
        self, services: Services, pipeline: Pipeline, models: ModelRegistry | None = None
    ) -> None:
        self.services = services
        self.pipeline = pipeline
        self.settings = services.settings
        self.models = models or ModelRegistry(pipeline.ready, self.settings.model_ids_ttl_s)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"
        self.webhooks = WebhookSender(services, self.worker_id)
        self._slots = asyncio.Semaphore(self.settings.worker_concurrency)
        self._wake = asyncio.Event()
        self._jobs: dict[str, asyncio.Task] = {}
        self._lost: dict[str, BaseException] = {}
        self._loops: list[asyncio.Task] = []
        self._stopping = False

    @classmethod
    def from_settings(cls, settings: Settings, pipeline: Pipeline) -> TaskWorker:
        """Connect this replica's state clients (database, blobs, Redis)."""
        return cls(Services.from_settings(settings), pipeline)

    # --- lifecycle ---------------------------------------------------------------

    def start(self) -> None:
        if self._loops:
            return
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._claim_loop(), name="task-claims"),
            loop.create_task(self.webhooks.run(), name="webhook-outbox"),
            loop.create_task(self._listen(), name="runner-wakeups"),
            loop.create_task(self._housekeeping(), name="task-housekeeping"),
            self.models.learn_in_background(),
        ]

    async def stop(self) -> None:
        """Stop claiming, cancel running work and hand its tasks back to the queue at once
        (no attempt spent), so a downscale or upgrade neither waits for leases nor
        burns retries."""
        self._stopping = True
        for loop_task in self._loops:
            loop_task.cancel()
        self._loops = []
        jobs = dict(self._jobs)
        for job in jobs.values():
            job.cancel()
        await asyncio.gather(*jobs.values(), return_exceptions=True)
        released = 0
        for task_id in jobs:
            try:
                if await asyncio.to_thread(self.services.store.release, task_id, self.worker_id):
                    released += 1
                    event = task_event(task_id, TaskStatus.QUEUED, released=True)
                    await publish(self.services, task_id, event)
            except Exception:
                logger.warning("could not release %s; its lease will expire", task_id)
        if released:
            await wake_runners(self.services, "released")
            logger.info("released %d task(s) on shutdown", released)

    def wake(self) -> None:
        self._wake.set()
        self.webhooks.wake()

    def stats(self) -> dict[str, float]:
        """Autoscaling metrics: tasks waiting in the database and running here."""
        return {
            "queued_tasks": float(self.services.store.count_queued(ready_only=True)),
            "running_tasks": float(len(self._jobs)),
        }

    # --- waking ------------------------------------------------------------------

    async def _listen(self) -> None:
        """Redis pub/sub wake-ups; on an outage retry slowly (the fallback poll covers it)."""
        if self.services.aredis is None:
            return
        while True:
            try:
                async for reason in events.runner_wakeups(self.services.aredis):
                    if reason == "webhook":
                        self.webhooks.wake()
                    else:
                        self._wake.set()
            except events.EventsUnavailable:
                await asyncio.sleep(self.settings.worker_poll_s)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("wake-up listener failed; retrying")
                await asyncio.sleep(self.settings.worker_poll_s)

    async def _idle_wait(self) -> None:
        """Sleep until woken, the next due time in the database, or the fallback poll."""
        await sleep_until_due(self.services.store, self._wake, self.settings.worker_poll_s)

    # --- the loop ---------------------------------------------------------------

    async def _claim_loop(self) -> None:
        store = self.services.store
        while True:
            await self._slots.acquire()
            try:
                # Clear before looking: a wake-up that lands during the claim query
                # sets the event again, so it is never lost.
                self._wake.clear()
                reaped: list[str] = []
                task = await asyncio.to_thread(
                    store.claim_next, self.worker_id, self.settings.task_lease_s, reaped
                )
                for task_id in reaped:  # ended by lease expiry: announce like any end
                    await self._announce_id(task_id)
            except asyncio.CancelledError:
                self._slots.release()
                raise
            except Exception:  # the database blipped: keep the loop alive
                logger.exception("task loop error; retrying")
                self._slots.release()
                await asyncio.sleep(1)
                continue
            if task is None:
                self._slots.release()
                await self._idle_wait()
                continue
            job = asyncio.get_running_loop().create_task(self._run(task))
            self._jobs[task.id] = job

    async def _housekeeping(self) -> None:
        """Queue-depth metric, the webhook sweep, and the retention purge."""
        last_purge = 0.0
        loop = asyncio.get_running_loop()
        while True:
            try:
                store = self.services.store
                metrics.set_queued_tasks(await asyncio.to_thread(store.count_queued))
                for task in await asyncio.to_thread(store.unscheduled_webhooks):
                    await announce_terminal(self.services, task)
                if loop.time() - last_purge >= self.settings.purge_interval_s:
                    last_purge = loop.time()
                    await self.purge()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("task housekeeping failed")
            await asyncio.sleep(max(self.settings.worker_poll_s, 30.0))

    async def purge(self, max_rounds: int = 100) -> int:
        """Delete tasks past their retention, with their audio and cached results.

        Batch after batch until none is left (each batch gives every tenant a share),
        bounded so one pass cannot hold the loop for long.
        """
        store = self.services.store
        models: dict[str, str | None] | None = None
        purged = 0
        for _ in range(max_rounds):
            expired = await asyncio.to_thread(store.purge_expired, self.settings.retention_days)
            if not expired:
                break
            if models is None:
                try:
                    models = await self.models.ids()
                except Exception:
                    logger.warning("models unavailable; cached results expire by their TTL")
            for task in expired:
                await asyncio.to_thread(forget, self.services, task, models)
            purged += len(expired)
        if purged:
            logger.info("purged %d task(s) past retention", purged)
        return purged

    async def _announce_id(self, task_id: str) -> None:
        task = await asyncio.to_thread(self.services.store.get, task_id)
        if task is not None:
            await announce_terminal(self.services, task)

    # --- one task ------------------------------------------------------------------

    async def _run(self, task: Task) -> None:
        work = asyncio.current_task()
        assert work is not None
        heartbeat = asyncio.get_running_loop().create_task(self._heartbeat(task.id, work))
        try:
            await self._process(task)
        except asyncio.CancelledError:
            lost = self._lost.get(task.id)
            if lost is None:
                raise  # shutdown: stop() releases the lease
            if isinstance(lost, TaskCancelled):
                await self._announce_id(task.id)
            logger.info("task %s stopped here: %s", task.id, type(lost).__name__)
        finally:
            heartbeat.cancel()
            self._lost.pop(task.id, None)
            self._jobs.pop(task.id, None)
            self._slots.release()

    async def _heartbeat(self, task_id: str, work: asyncio.Task) -> None:
        """Renew the lease; when it is lost (or the task was cancelled or deleted),
        cancel the work so the task never runs twice at once."""
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
            except (LeaseLost, TaskCancelled, TaskNotFound) as exc:
                self._lost[task_id] = exc
                work.cancel()
                return
            except TaskStoreError:
                return
            except Exception:
                logger.warning("lease renewal failed for %s", task_id, exc_info=True)

    async def _process(self, task: Task) -> None:
        store = self.services.store
        wid = self.worker_id
        opts = ProcessingOptions.from_stored(task.options)
        total_s = task.duration_s
        try:
            await self._progress(task, 0.0, total_s, attempt=task.attempts)
            key = key_of(task, await self.models.ids())
            cached = await cached_result(self.services, key)
            if cached is not None:
                if redacted_audio.wanted(opts):  # this task's own redacted copy
                    audio = await asyncio.to_thread(self.services.blobs.get, task.audio_uri)
                    cached = await redacted_audio.store_redacted_copy(
                        self.services, task, audio, cached
                    )
                final = await asyncio.to_thread(store.succeed, task.id, wid, cached, cached=True)
                metrics.record_cache(True)
            else:
                metrics.record_cache(False)
                audio = await asyncio.to_thread(self.services.blobs.get, task.audio_uri)

                async def on_stage(stage: str) -> None:
                    if stage == TaskStatus.SUMMARIZING:
                        current = await asyncio.to_thread(
                            store.transition, task.id, wid, TaskStatus.SUMMARIZING
                        )
                        await self._progress(current, total_s, total_s)

                async def on_progress(done_s: float, of_s: float) -> None:
                    await self._progress(task, done_s, of_s)

                if opts.input == InputKind.TRANSCRIPT:  # uploaded: no speech to text
                    transcript = await asyncio.to_thread(
                        parse_transcript, audio, task.audio_filename, language=opts.language
                    )
                    result = await self.pipeline.summarize_transcript(
                        transcript, opts, on_stage=on_stage, task_id=task.id
                    )
                else:
                    result = await self.pipeline.run(
                        audio, opts, on_stage=on_stage, on_progress=on_progress, task_id=task.id
                    )
                # Token ids are for verbose_json clients, not worth storing with every task.
                payload = result.model_dump(
                    mode="json", exclude={"transcript": {"segments": {"__all__": {"tokens"}}}}
                )
                if redacted_audio.wanted(opts):
                    payload = await redacted_audio.store_redacted_copy(
                        self.services, task, audio, payload
                    )
                final = await asyncio.to_thread(
                    store.succeed, task.id, wid, payload, duration_s=result.transcript.duration_s
                )
                await keep_result(self.services, key, payload)
            await redacted_audio.drop_original(self.services, task)
            await announce_terminal(self.services, final)
        except (AudioError, TranscriptFileError) as exc:
            await self._fail(task, exc.code, exc.message, retryable=False)
        except TaskStoreError as exc:  # lease lost, cancelled or deleted meanwhile
            current = await asyncio.to_thread(store.get, task.id)
            if current is not None and current.is_terminal:
                await announce_terminal(self.services, current)
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
        if final is not None and final.is_terminal:
            await announce_terminal(self.services, final)
        elif final is not None:
            error = {"code": code, "message": message}
            event = task_event(task.id, final.status, retrying=True, error=error)
            await publish(self.services, task.id, event)
            self._wake.set()  # re-check the due time of the backoff

    async def _progress(
        self, task: Task, done_s: float | None, total_s: float | None, **extra: Any
    ) -> None:
        """A progress event: seconds of audio transcribed so far, of the total."""
        progress = {
            "transcribed_s": round(done_s, 2) if done_s is not None else None,
            "total_s": round(total_s, 2) if total_s is not None else None,
        }
        await publish(self.services, task.id, event_of(task, progress=progress, **extra))


__all__ = ["TaskWorker"]
