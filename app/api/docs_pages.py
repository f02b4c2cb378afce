"""Self-hosted API docs: Swagger UI at ``/docs`` and ReDoc at ``/redoc``, nothing from a CDN.

FastAPI's default pages load floating CDN scripts with no integrity check. On our
origin any script could read the console's API key from ``sessionStorage``, and on a
machine without network the pages would not render. The assets come from the
``fastapi-offline`` package instead, served from this origin, and each page carries a
CSP that allows only our own scripts plus the one inline start-up script, by hash.
"""

from __future__ import annotations

import base64
import hashlib
import re
from pathlib import Path

import fastapi_offline
from fastapi import APIRouter
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse

from app.api.errors import APIError

ASSETS_DIR = Path(fastapi_offline.__file__).resolve().parent / "static"
ASSETS_PATH = "/docs/assets"
#: The files served, with their media types; nothing else under the folder is.
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
TITLE = "AI Processing Platform"

router = APIRouter(include_in_schema=False)

_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.S)


def page_csp(html: str) -> str:
    """The page's policy: own scripts, plus its inline scripts by their sha256."""
    scripts = ["'self'"] + [
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    ]
    return "; ".join(
        [
            "default-src 'none'",
            "script-src " + " ".join(scripts),
            "style-src 'self' 'unsafe-inline'",  # the UIs style their own elements inline
            "img-src 'self' data:",
            "font-src 'self' data:",
            "connect-src 'self'",
            "worker-src 'self' blob:",  # ReDoc searches in a worker
            "base-uri 'none'",
            "form-action 'self'",
            "frame-ancestors 'none'",
        ]
    )


def _secured(page: HTMLResponse) -> HTMLResponse:
    html = page.body.decode()
    return HTMLResponse(html, headers={"Content-Security-Policy": page_csp(html)})


@router.get("/docs")
def swagger_ui() -> HTMLResponse:
    return _secured(
        get_swagger_ui_html(
            openapi_url="/openapi.json",
            title=f"{TITLE} - API docs",
            swagger_js_url=f"{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{ASSETS_PATH}/favicon.png",
        )
    )


@router.get("/redoc")
def redoc() -> HTMLResponse:
    return _secured(
        get_redoc_html(
            openapi_url="/openapi.json",
            title=f"{TITLE} - API reference",
            redoc_js_url=f"{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
    )


@router.get(ASSETS_PATH + "/{name}")
def docs_asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise APIError(404, "not_found", f"no docs asset '{name}'")
    return FileResponse(ASSETS_DIR / name, media_type=media_type)


__all__ = ["ASSETS", "page_csp", "router"]
