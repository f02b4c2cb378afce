"""The Serve application graph: Ingress → Transcriber, Summarizer (``import_path`` target)."""

from __future__ import annotations

from ray.serve import Application

from deployments.ingress import Ingress
from deployments.summarizer import Summarizer
from deployments.transcriber import Transcriber


def build() -> Application:
    return Ingress.bind(Transcriber.bind(), Summarizer.bind())


app = build()
