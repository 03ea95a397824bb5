"""A small HTTP file server on 127.0.0.1 for the image and file URL tests: `files` by path,
`/redirect?to=<url>` (302 there), `/slow/<path>` (the file after `slow_seconds`), `/chunked/<path>`
(the file with no content-length, in 64 KiB chunks)."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import parse_qs

from devkit.upstream import ThreadedServer


class FileServer(ThreadedServer):
    path_prefix = ""

    def __init__(self, files: dict[str, tuple[str, bytes]], slow_seconds: float = 5.0) -> None:
        self.files = files  # path → (content type, body)
        self.slow_seconds = slow_seconds
        self.paths: list[str] = []  # every path asked for, in order
        super().__init__()

    def url(self, path: str, host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope["path"]  # percent-decoded by the server
        self.paths.append(path)
        if path == "/redirect":
            target = parse_qs(scope["query_string"].decode())["to"][0]
            await send(
                {
                    "type": "http.response.start",
                    "status": 302,
                    "headers": [(b"location", target.encode())],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        chunked = path.startswith("/chunked/")
        if path.startswith("/slow/"):
            await asyncio.sleep(self.slow_seconds)
        path = path.removeprefix("/slow").removeprefix("/chunked")
        if path not in self.files:
            await send({"type": "http.response.start", "status": 404, "headers": []})
            await send({"type": "http.response.body", "body": b"not here"})
            return
        content_type, body = self.files[path]
        headers = [(b"content-type", content_type.encode())]
        if not chunked:
            headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for start in range(0, len(body), 65536):
            piece = body[start : start + 65536]
            await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
