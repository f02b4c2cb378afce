"""Ingress deployment: the FastAPI app, holding handles to the model deployments.

Each replica also runs a task worker (see app/tasks/runner.py): uploads wait in the
database and replicas claim them with leases, so autoscaling the Ingress also
scales how many tasks are in flight.
"""

from __future__ import annotations

from ray import serve
from ray.serve.handle import DeploymentHandle

from app.api.main import create_app
from app.tasks.pipeline import Pipeline
from app.storage.clients import Services
from app.core.settings import get_settings


@serve.deployment(name="Ingress", ray_actor_options={"num_cpus": 0.1})
@serve.ingress()
class Ingress:
    def __init__(self, transcriber: DeploymentHandle, summarizer: DeploymentHandle) -> None:
        self.pipeline = Pipeline(transcriber, summarizer)
        self.services = Services.from_settings(get_settings())

    def __serve_build_asgi_app__(self):
        # Built on the replica, after __init__, so routes reach the handles directly.
        return create_app(self.pipeline, self.services)
