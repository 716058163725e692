"""The web chat page: static HTML, CSS and plain JavaScript served by the gateway (no build step).

``/`` redirects to ``/ui/``; the page's files are under ``/ui/static/``. The page talks to the
same gateway with the user's API key, exactly like any OpenAI client: ``GET /v1/models``,
``POST /v1/chat/completions`` (streamed), ``GET /v1/conversations[/{id}]``. A strict Content
Security Policy keeps it from loading anything that is not from this gateway.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, RedirectResponse
from starlette.staticfiles import StaticFiles

STATIC = Path(__file__).resolve().parent / "static"

_HEADERS = {
    "content-security-policy": (
        "default-src 'self'; img-src 'self' data:; "
        "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}

router = APIRouter(include_in_schema=False)


@router.get("/")
async def root() -> RedirectResponse:
    return RedirectResponse("/ui/", status_code=307)


@router.get("/ui")
@router.get("/ui/")
async def chat_page() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html", headers=_HEADERS)


def mount_web(app: FastAPI) -> None:
    """Serve the chat page on ``app`` (``/`` and ``/ui/``)."""
    app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC), name="ui-static")


__all__ = ["STATIC", "mount_web"]
