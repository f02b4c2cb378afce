"""The web console: static pages at ``/console`` plus the two routes it needs
(``GET /v1/search`` and ``GET /v1/tasks/{id}/audio``)."""

from app.api.console.routes import router

__all__ = ["router"]
