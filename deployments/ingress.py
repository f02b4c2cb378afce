"""Ingress deployment: the FastAPI app, and nothing else.

It authenticates, validates, stores uploads and task rows, and answers
reads; the work itself is done by the TaskRunner deployment, which it wakes
over Redis (or through its handle when Redis is not configured). It keeps
handles to the model deployments for the synchronous OpenAI-compatible routes
and readiness.
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.api.main import create_app
from app.core.settings import get_settings
from app.storage.clients import Services
from app.tasks.pipeline import Pipeline


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Ingress:
    def __init__(
        self,
        transcriber: DeploymentHandle,
        summarizer: DeploymentHandle,
        runner: DeploymentHandle | None = None,
        diarizer: DeploymentHandle | None = None,
    ) -> None:
        self.pipeline = Pipeline(transcriber, summarizer, diarizer)
        self.services = Services.from_settings(get_settings())
        self.runner = runner

    def __serve_build_asgi_app__(self):
        # Built on the replica, after __init__, so routes reach the handles directly.
        return create_app(self.pipeline, self.services, runner=self.runner)
