"""An HTTP provider's error answer as the worker's errors (and so as gRPC codes), for every API
clawgate speaks: OpenAI's and Anthropic's error bodies both hold `error.message`."""

from __future__ import annotations

import email.utils
import time

import orjson

from agent_worker.errors import (
    ProviderAuthError,
    ProviderFailedError,
    ProviderOverloadedError,
    ProviderRateLimitedError,
    ProviderRejectedError,
    TurnError,
)
from agent_worker.providers.overflow import overflow_error

MAX_ERROR_BODY = 64 << 10
_REJECTED = frozenset({400, 404, 413, 422})
# Asked again (same model after a pause, then the fallbacks) when nothing was answered yet.
_OVERLOADED = frozenset({408, 500, 502, 503, 504, 529})


def retry_after_seconds(value: str) -> float | None:
    """A Retry-After header's wait: delta-seconds or an HTTP date; None when unreadable."""
    value = value.strip()
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def status_error(
    status: int, body: bytes, location: str = "", retry_after: float | None = None
) -> TurnError:
    """Maps an upstream HTTP error answer to the worker's errors."""
    if 300 <= status < 400:  # an API client does not follow these: the baseUrl needs fixing
        return ProviderFailedError(
            f"provider redirected ({status}) to {location or 'nowhere'}: set baseUrl to the"
            " address it names"
        )
    try:
        detail = orjson.loads(body)["error"]["message"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        detail = body[:200].decode(errors="replace") or f"HTTP {status}"
    if status in (401, 403):
        return ProviderAuthError(f"provider refused its credentials ({status}): {detail}")
    if status == 429:
        return ProviderRateLimitedError(f"provider rate limit: {detail}", retry_after)
    if status in _REJECTED and (
        overflow := overflow_error(body[:MAX_ERROR_BODY].decode(errors="replace"), detail)
    ):
        overflow.message = f"provider rejected the request ({status}): {detail}"
        return overflow
    if status in _REJECTED:
        return ProviderRejectedError(f"provider rejected the request ({status}): {detail}")
    if status in _OVERLOADED:
        return ProviderOverloadedError(f"provider failed ({status}): {detail}", retry_after)
    return ProviderFailedError(f"provider failed ({status}): {detail}")
