"""The chat page: `GET /` and its assets under `/ui/`, shipped inside the package (no build
step). Assets are named by a hash of their content and cached for a year; the page itself is
revalidated, and a content security policy allows scripts, styles and connections to this
origin only (no inline scripts)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from importlib import resources

from fastapi import APIRouter
from fastapi.responses import Response

from gateway_edge.errors import ApiError

_CONTENT_TYPES = {
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".svg": "image/svg+xml",
}
_SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self';"
        " img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
}


@dataclass(frozen=True)
class _Asset:
    body: bytes
    content_type: str


def _load() -> tuple[bytes, dict[str, _Asset]]:
    folder = resources.files("gateway_edge") / "ui"
    page = (folder / "index.html").read_text(encoding="utf-8")
    assets: dict[str, _Asset] = {}
    for name, suffix in (("app", ".js"), ("app", ".css"), ("favicon", ".svg")):
        body = (folder / f"{name}{suffix}").read_bytes()
        hashed = f"{name}.{hashlib.sha256(body).hexdigest()[:12]}{suffix}"
        assets[hashed] = _Asset(body, _CONTENT_TYPES[suffix])
        page = page.replace("{{" + name + suffix + "}}", hashed)
    return page.encode(), assets


_PAGE, _ASSETS = _load()
_ICON = next(asset for name, asset in _ASSETS.items() if name.startswith("favicon."))
router = APIRouter()


@router.get("/")
async def page() -> Response:
    headers = {**_SECURITY_HEADERS, "cache-control": "no-cache"}
    return Response(_PAGE, media_type="text/html; charset=utf-8", headers=headers)


@router.get("/favicon.ico")
async def favicon() -> Response:
    """Browsers ask for it on every page of the origin."""
    headers = {"cache-control": "public, max-age=86400", "x-content-type-options": "nosniff"}
    return Response(_ICON.body, media_type=_ICON.content_type, headers=headers)


@router.get("/ui/{name}")
async def asset(name: str) -> Response:
    found = _ASSETS.get(name)
    if found is None:
        raise ApiError(404, f"Not found: /ui/{name}", "not_found_error")
    headers = {
        "cache-control": "public, max-age=31536000, immutable",
        "x-content-type-options": "nosniff",
    }
    return Response(found.body, media_type=found.content_type, headers=headers)
