"""Live transcription over WebSocket in the OpenAI Realtime API's shape (``/v1/realtime``).

- ``protocol``: client events, the session configuration, server events;
- ``session``: one session (VAD cuts, local agreement, decodes through the Transcriber);
- ``routes``: the WebSocket route (auth, limits, bad input, the session's task).
"""

from __future__ import annotations

from app.api.realtime.routes import router

__all__ = ["router"]
