"""JSON responses encoded with orjson, for results and for ApiError alike."""

from __future__ import annotations

from typing import Any

import orjson
from fastapi.responses import Response

from gateway_edge.errors import ApiError


def json_response(payload: Any, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(payload), media_type="application/json", headers=headers)


def error_response(error: ApiError) -> Response:
    return Response(
        error.body(), status_code=error.status, media_type="application/json", headers=error.headers
    )
