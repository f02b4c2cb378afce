"""Headers every response carries: nothing here may be cached, sniffed or leak a referrer.

Responses carry transcripts, summaries, audio and keys. ``Cache-Control: no-store``
keeps them out of shared and browser caches (and out of a copied browser profile),
``X-Content-Type-Options: nosniff`` stops a browser from running an upload served
back as something else, and ``Referrer-Policy: no-referrer`` keeps task ids in the
console's URLs from reaching any other site. A pure ASGI wrapper, so streamed
responses (SSE, audio) pass through untouched but for their headers.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

PRIVATE_HEADERS: dict[bytes, bytes] = {
    b"cache-control": b"no-store",
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
}


class PrivateResponses:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_private(message: Message) -> None:
            if message["type"] == "http.response.start":
                kept = [
                    (name, value)
                    for name, value in message.get("headers", [])
                    if name.lower() not in PRIVATE_HEADERS
                ]
                message["headers"] = kept + list(PRIVATE_HEADERS.items())
            await send(message)

        await self.app(scope, receive, send_private)


__all__ = ["PRIVATE_HEADERS", "PrivateResponses"]
