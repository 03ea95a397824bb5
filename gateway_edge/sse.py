"""Server-sent events framing shared by the streaming endpoints."""

from __future__ import annotations

from gateway_edge.errors import ApiError

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


def error_frame(error: ApiError) -> bytes:
    return b"data: " + error.body() + b"\n\n"
