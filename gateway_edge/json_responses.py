"""JSON responses encoded with orjson, for results and for ApiError alike."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from gateway_edge.errors import ApiError, rendered


def json_response(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def error_response(error: ApiError) -> Response:
    """The framework's routes answer errors exactly as the hot path does (errors.rendered)."""
    status, headers, body = rendered(error)
    response = Response(body, status_code=status)
    response.raw_headers = [*headers, (b"content-length", str(len(body)).encode())]
    return response
