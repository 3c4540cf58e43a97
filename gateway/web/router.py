"""Serves the web UI: `/` is the single page, `/ui/<file>` its static assets.

Files are read once at import from a fixed list, so a request can only ever name one of them
(no path handling, no traversal). The page's Content-Security-Policy allows scripts, styles and
connections to this origin only; tokens live in the tab's sessionStorage and go out as bearer
headers, never in URLs.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response

from gateway.errors import NotFound

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).parent / "static"
_MEDIA_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}
_FILES: dict[str, tuple[bytes, str]] = {
    p.name: (p.read_bytes(), _MEDIA_TYPES[p.suffix])
    for p in sorted(STATIC_DIR.iterdir())
    if p.suffix in _MEDIA_TYPES
}
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self' ws: wss:; object-src 'none'; frame-src blob:; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    # Small files: revalidate every load so an upgrade is picked up at once.
    "Cache-Control": "no-cache",
}

router = APIRouter(include_in_schema=False)


def _serve(name: str) -> Response:
    found = _FILES.get(name)
    if found is None:
        raise NotFound("no such file")
    body, media_type = found
    return Response(body, media_type=media_type, headers=_HEADERS)


@router.get("/")
def index() -> Response:
    return _serve("index.html")


@router.get("/ui/{name}")
def asset(name: str) -> Response:
    return _serve(name)
