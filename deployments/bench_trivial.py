"""A trivial FastAPI app, the baseline of bench/http_path.py (not part of the service).

The same one-route app runs under bare uvicorn and as a one-replica Serve ingress, so
the difference between the two is what Serve's HTTP path costs. It lives here because
Serve's replicas import it by ``import_path`` (``deployments`` is an installed package,
``bench`` is not).
"""

from __future__ import annotations

from fastapi import FastAPI
from ray import serve


def health_app() -> FastAPI:
    api = FastAPI()

    @api.get("/health")
    async def health() -> dict:
        return {"ok": True}

    return api


def trivial_app(args: dict | None = None):
    """``import_path`` target (an application builder): one replica, no CPU reserved."""

    @serve.deployment(name="Trivial", num_replicas=1, ray_actor_options={"num_cpus": 0})
    @serve.ingress(health_app())
    class Trivial:
        pass

    return Trivial.bind()
