"""The edge's one error type, how it is rendered, and the worker error → HTTP tables (used for
JSON responses and SSE error events alike)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import grpc
import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb


@dataclass(slots=True)
class ApiError(Exception):
    status: int
    message: str
    type: str = "invalid_request_error"
    param: str | None = None
    code: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return orjson.dumps(
            {
                "error": {
                    "message": self.message,
                    "type": self.type,
                    "param": self.param,
                    "code": self.code,
                }
            }
        )


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, "invalid_request_error", param, code)


def unauthorized() -> ApiError:
    return ApiError(401, "Unauthorized", "unauthorized", headers={"www-authenticate": "Bearer"})


def refused_identity(status: int, message: str, code: str) -> ApiError:
    """A trusted-proxy refusal, named as OpenClaw names it (code trusted_proxy_*)."""
    return ApiError(status, message, "unauthorized" if status == 401 else "forbidden", code=code)


def missing_scope(scope: str) -> ApiError:
    return ApiError(403, f"missing scope: {scope}", "forbidden", code="missing_scope")


def rate_limited(retry_after_seconds: int) -> ApiError:
    return ApiError(
        429,
        f"Too many failed authentication attempts; retry after {retry_after_seconds} seconds.",
        "rate_limited",
        code="auth_rate_limited",
        headers={"retry-after": str(retry_after_seconds)},
    )


RETRY_AFTER_SECONDS = "1"
_Mapping = tuple[int, str, str]  # HTTP status, error type, error code

# A worker call that failed, or a turn its worker refused before it started, by its
# pb.ErrorCode (whose numbers are gRPC's status codes).
_REFUSED: dict[int, _Mapping] = {
    pb.ERROR_CODE_INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_request"),
    pb.ERROR_CODE_NOT_FOUND: (400, "invalid_request_error", "model_not_found"),
    pb.ERROR_CODE_RESOURCE_EXHAUSTED: (429, "rate_limited", "worker_busy"),
    pb.ERROR_CODE_DEADLINE_EXCEEDED: (504, "api_error", "timeout"),
    pb.ERROR_CODE_UNAVAILABLE: (503, "api_error", "worker_unavailable"),
    pb.ERROR_CODE_CANCELLED: (503, "api_error", "cancelled"),
    pb.ERROR_CODE_OUT_OF_RANGE: (400, "invalid_request_error", "context_length_exceeded"),
    # The session is another identity's (the worker's check; the edge makes the same one).
    pb.ERROR_CODE_PERMISSION_DENIED: (403, "forbidden", "forbidden"),
}
# A turn that failed inside a worker after it started: the provider is to blame by default.
_FAILED: dict[int, _Mapping] = {
    pb.ERROR_CODE_INVALID_ARGUMENT: (400, "invalid_request_error", "provider_rejected"),
    pb.ERROR_CODE_RESOURCE_EXHAUSTED: (429, "rate_limit_error", "provider_rate_limited"),
    pb.ERROR_CODE_DEADLINE_EXCEEDED: (504, "api_error", "timeout"),
    pb.ERROR_CODE_OUT_OF_RANGE: (400, "invalid_request_error", "context_length_exceeded"),
}
# The request part an error names, by pb.ErrorCode.
_PARAMS: dict[int, str] = {
    pb.ERROR_CODE_NOT_FOUND: "model",
    pb.ERROR_CODE_OUT_OF_RANGE: "messages",
}
_PROVIDER_FAILED = (502, "api_error", "provider_error")


def _mapped(mapping: _Mapping, message: str, param: str | None = None) -> ApiError:
    status, error_type, error_code = mapping
    error = ApiError(status, message, error_type, param, error_code)
    if status == 429:
        error.headers["retry-after"] = RETRY_AFTER_SECONDS
    return error


def refused(status: int, details: str | None) -> ApiError:
    """A turn refused before it started, or a failed worker call, by its pb.ErrorCode."""
    message = details or f"worker call failed: {pb.ErrorCode.Name(status)}"  # type: ignore[arg-type]
    if status == pb.ERROR_CODE_UNAVAILABLE:
        message = "No agent worker is reachable; try again shortly."
    return _mapped(_REFUSED.get(status, _PROVIDER_FAILED), message, _PARAMS.get(status))


def api_error_from_call(code: grpc.StatusCode, details: str | None) -> ApiError:
    return refused(code.value[0], details)  # pb.ErrorCode numbers are gRPC's


def turn_failed(error: pb.TurnError) -> ApiError:
    """The turn's error event, once it had started (or a store failure, before or after)."""
    if error.source == pb.ERROR_SOURCE_SESSION_STORE:
        return store_failed(error.message)
    if error.source == pb.ERROR_SOURCE_BUDGET:
        return ApiError(429, error.message, "insufficient_quota", code="insufficient_quota")
    message = error.message or "the agent's turn failed"
    param = _PARAMS.get(error.status) if error.status in _FAILED else None
    failed = _mapped(_FAILED.get(error.status, _PROVIDER_FAILED), message, param)
    if error.retry_after_seconds > 0:  # the provider's own wait, rounded up to whole seconds
        failed.headers["retry-after"] = str(math.ceil(error.retry_after_seconds))
    return failed


def store_failed(message: str) -> ApiError:
    """The worker's session store failed (before or during the turn): nothing was stored."""
    error = ApiError(503, message, "api_error", code="store_unavailable")
    error.headers["retry-after"] = RETRY_AFTER_SECONDS
    return error


def worker_lost(address: str, code: grpc.StatusCode, details: str | None) -> ApiError:
    """The stream to the worker running a started turn broke: nothing of the turn is stored."""
    return ApiError(
        502,
        f"Lost agent worker {address} during the turn ({code.name}: {details or 'no details'});"
        " nothing of it was stored.",
        "api_error",
        code="worker_lost",
    )


def too_large(message: str, param: str | None = None) -> ApiError:
    return ApiError(413, message, "invalid_request_error", param, "request_too_large")


def body_too_large(limit: int) -> ApiError:
    return too_large(f"Request body is larger than {limit} bytes.")


def internal_error() -> ApiError:
    """What a client reads when the edge failed unexpectedly (the log has the traceback)."""
    return ApiError(500, "Internal error.", "api_error")


JSON_CONTENT_TYPE = (b"content-type", b"application/json")


def rendered(error: ApiError) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
    """The HTTP status, headers and body of an error, for the hot path and the framework."""
    headers = [JSON_CONTENT_TYPE, *((k.encode(), v.encode()) for k, v in error.headers.items())]
    return error.status, headers, error.body()
