"""TaskRunner deployment: claims queued tasks from the database and runs them.

Its own deployment (not a job of the Ingress), so a slow HTTP request cannot
starve task processing and vice versa, it has its own small CPU share, and it
scales on the task queue (``deployments/autoscaling.py``) instead of on HTTP
traffic. It gets no HTTP requests: it is woken over Redis pub/sub by the
Ingress after each submission, and falls back to a slow poll. See
docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import logging

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.core.settings import get_settings
from app.tasks.pipeline import Pipeline
from app.tasks.runner import TaskWorker

logger = logging.getLogger("ray.serve")


@serve.deployment(name="TaskRunner", ray_actor_options={"num_cpus": 0.1})
class TaskRunner:
    async def __init__(
        self,
        transcriber: DeploymentHandle,
        summarizer: DeploymentHandle,
        diarizer: DeploymentHandle | None = None,
    ) -> None:
        # async: Serve runs it on the replica's event loop, where the loops must live.
        pipeline = Pipeline(transcriber, summarizer, diarizer)
        self.worker = await asyncio.to_thread(TaskWorker.from_settings, get_settings(), pipeline)
        self.worker.start()
        logger.info("TaskRunner %s started", self.worker.worker_id)

    async def record_autoscaling_stats(self) -> dict[str, float]:
        """Custom metrics for the queue-depth autoscaling policy."""
        return await asyncio.to_thread(self.worker.stats)

    async def wake(self) -> None:
        """Fallback wake-up through the handle when Redis is not configured."""
        self.worker.wake()

    async def stats(self) -> dict[str, float]:
        return await asyncio.to_thread(self.worker.stats)

    async def __del__(self) -> None:
        # Graceful shutdown (downscale, upgrade): hand running tasks back to the queue.
        await self.worker.stop()
