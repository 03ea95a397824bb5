"""The edge's one error type, its OpenAI-shaped body, and the gRPC → HTTP table (used for JSON
responses and SSE error events alike)."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from services.grpc_status import STATUS_BY_NUMBER


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


def rate_limited(retry_after_seconds: int) -> ApiError:
    return ApiError(
        429,
        f"Too many failed authentication attempts; retry after {retry_after_seconds} seconds.",
        "rate_limited",
        code="auth_rate_limited",
        headers={"retry-after": str(retry_after_seconds)},
    )


RETRY_AFTER_SECONDS = "1"

# gRPC status of a worker call → (HTTP status, type, code).
_CALL_STATUS: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "invalid_request"),
    grpc.StatusCode.NOT_FOUND: (400, "invalid_request_error", "model_not_found"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limited", "worker_busy"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "api_error", "timeout"),
    grpc.StatusCode.UNAVAILABLE: (503, "api_error", "worker_unavailable"),
    grpc.StatusCode.CANCELLED: (503, "api_error", "cancelled"),
}
# A turn that failed inside a worker after it started: the provider is to blame by default.
_TURN_ERROR: dict[grpc.StatusCode, tuple[int, str, str]] = {
    grpc.StatusCode.INVALID_ARGUMENT: (400, "invalid_request_error", "provider_rejected"),
    grpc.StatusCode.RESOURCE_EXHAUSTED: (429, "rate_limited", "provider_rate_limited"),
    grpc.StatusCode.DEADLINE_EXCEEDED: (504, "api_error", "timeout"),
}
_PROVIDER_FAILED = (502, "api_error", "provider_error")


def api_error_from_call(code: grpc.StatusCode, details: str | None) -> ApiError:
    status, error_type, error_code = _CALL_STATUS.get(code, _PROVIDER_FAILED)
    param = "model" if code is grpc.StatusCode.NOT_FOUND else None
    message = details or f"worker call failed: {code.name}"
    if code is grpc.StatusCode.UNAVAILABLE:
        message = "No agent worker is reachable; try again shortly."
    error = ApiError(status, message, error_type, param, error_code)
    if status == 429:
        error.headers["retry-after"] = RETRY_AFTER_SECONDS
    return error


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


def api_error_from_turn_error(code_number: int, message: str, source: int = 0) -> ApiError:
    if source == pb.ERROR_SOURCE_SESSION_STORE:
        return store_failed(message)
    code = STATUS_BY_NUMBER.get(code_number, grpc.StatusCode.UNKNOWN)
    status, error_type, error_code = _TURN_ERROR.get(code, _PROVIDER_FAILED)
    error = ApiError(status, message or "the agent's turn failed", error_type, None, error_code)
    if status == 429:
        error.headers["retry-after"] = RETRY_AFTER_SECONDS
    return error
