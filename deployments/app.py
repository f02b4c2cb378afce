"""The Serve application graph (``import_path`` target).

Ingress (HTTP) ─┬─> Transcriber, Summarizer   (sync OpenAI routes, readiness)
                └─> TaskRunner ──> Transcriber ∥ Diarizer, Summarizer   (every task)
"""

from __future__ import annotations

from ray.serve import Application

from deployments.diarizer import Diarizer
from deployments.ingress import Ingress
from deployments.summarizer import Summarizer
from deployments.task_runner import TaskRunner
from deployments.transcriber import Transcriber


def build() -> Application:
    transcriber = Transcriber.bind()
    summarizer = Summarizer.bind()
    diarizer = Diarizer.bind()
    return Ingress.bind(
        transcriber,
        summarizer,
        TaskRunner.bind(transcriber, summarizer, diarizer),
        diarizer,
    )


app = build()
