"""The chat page: `GET /` and its assets under `/ui/`, shipped inside the package (no build
step). Assets are named by a hash of their content and cached for a year; the page itself is
revalidated, and a content security policy allows scripts, styles and connections to this
origin only (no inline scripts)."""

from __future__ import annotations

import hashlib
import re
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


# A module's import of another module beside it: `from "./name.js"`.
_MODULE_IMPORT = re.compile(r'from "\./([a-z_]+\.js)"')
_ENTRY_POINTS = ("app.js", "app.css", "favicon.svg")


def _load() -> tuple[bytes, dict[str, _Asset]]:
    """The page and its assets, each named by a hash of its content. The page's scripts are ES
    modules: a module's imports are rewritten to the hashed names of what it imports (hashed
    first), so that a changed module changes the name of every module that leads to it."""
    folder = resources.files("gateway_edge") / "ui"
    assets: dict[str, _Asset] = {}
    hashed_names: dict[str, str] = {}

    def add(filename: str) -> str:
        if filename in hashed_names:
            return hashed_names[filename]
        body = (folder / filename).read_bytes()
        if filename.endswith(".js"):
            text = body.decode("utf-8")
            body = _MODULE_IMPORT.sub(lambda found: f'from "./{add(found[1])}"', text).encode()
        stem, dot, suffix = filename.rpartition(".")
        hashed = f"{stem}.{hashlib.sha256(body).hexdigest()[:12]}.{suffix}"
        assets[hashed] = _Asset(body, _CONTENT_TYPES[dot + suffix])
        hashed_names[filename] = hashed
        return hashed

    page = (folder / "index.html").read_text(encoding="utf-8")
    for filename in _ENTRY_POINTS:
        page = page.replace("{{" + filename + "}}", add(filename))
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
