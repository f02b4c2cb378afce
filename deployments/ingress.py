"""Ingress deployment: the FastAPI app, and nothing else.

It translates HTTP to the task layer's door (submit, read, follow, delete);
the work itself is done by the TaskRunner deployment, which the door wakes
over Redis (or through its handle when no runner heard). It keeps
handles to the model deployments for the synchronous OpenAI-compatible routes
and readiness.
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.api.main import create_app
from app.core.settings import get_settings
from app.tasks.door import TaskDoor
from app.tasks.model_ids import ModelRegistry
from app.tasks.pipeline import Pipeline


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Ingress:
    async def __init__(
        self,
        transcriber: DeploymentHandle,
        summarizer: DeploymentHandle,
        runner: DeploymentHandle | None = None,
        diarizer: DeploymentHandle | None = None,
    ) -> None:
        # async: Serve runs it on the replica's event loop, where the model-id task lives.
        settings = get_settings()
        self.pipeline = Pipeline(transcriber, summarizer, diarizer)
        models = ModelRegistry(self.pipeline.ready, settings.model_ids_ttl_s)
        self._learning_models = models.learn_in_background()
        self.door = TaskDoor.from_settings(settings, models, self._waker(runner))

    @staticmethod
    def _waker(runner: DeploymentHandle | None):
        """Wake a TaskRunner through its handle when no runner heard Redis (or no Redis)."""
        if runner is None:
            return None

        async def wake() -> None:
            runner.wake.remote()

        return wake

    def __serve_build_asgi_app__(self):
        # Built on the replica, after __init__, so routes reach the handles directly.
        return create_app(self.pipeline, self.door)
