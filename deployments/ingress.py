"""Ingress deployment: the FastAPI app, holding handles to the model deployments."""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.api.main import create_app
from app.pipeline import Pipeline


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Ingress:
    def __init__(self, transcriber: DeploymentHandle, summarizer: DeploymentHandle) -> None:
        self.pipeline = Pipeline(transcriber, summarizer)

    def __serve_build_asgi_app__(self):
        # Built on the replica, after __init__, so routes reach the handles directly.
        return create_app(self.pipeline)
