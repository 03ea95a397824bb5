"""Domain errors of the worker, each carrying the gRPC status code it maps to (mapped once)."""

from __future__ import annotations

import grpc


class TurnError(Exception):
    """A turn could not run or failed; `code` is the gRPC status a client sees."""

    code: grpc.StatusCode = grpc.StatusCode.INTERNAL
    from_store = False  # the session store failed, not the provider
    over_budget = False  # the caller's budget has no room for it
    # Worth asking again, after a pause or of the next fallback model, when nothing of the
    # answer has arrived yet: unreachable, slow to answer, rate-limited or overloaded.
    transient = False
    retry_after: float | None = None  # seconds the provider asked for (its Retry-After)
    # The provider refused the key (401/403): another auth profile, or the next model, may do.
    key_refused = False
    rate_limited = False  # the provider said 429 (for this key)
    model_ref = ""  # "provider/model" that failed, when a model did (set by the model chain)

    def __init__(self, message: str, detail: str | None = None) -> None:
        super().__init__(message)
        self.message = message  # what the client reads
        self.detail = detail  # what only the worker's log shows (addresses, upstream text)


class NotFoundError(TurnError):
    """What a call names (a tool, a stored response) is not there, or not there for its caller."""

    code = grpc.StatusCode.NOT_FOUND


class UnknownAgentError(NotFoundError):
    pass


class InvalidTurnError(TurnError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotYourSessionError(TurnError):
    """The session belongs to another identity; said as OpenClaw says it, never its content."""

    code = grpc.StatusCode.PERMISSION_DENIED

    def __init__(self, session_key: str) -> None:
        super().__init__(f"Session {session_key!r} was not found.")


class WorkerAtCapacityError(TurnError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED


class SessionBusyError(TurnError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class TurnTimeoutError(TurnError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED


class ProviderUnavailableError(TurnError):
    """The provider could not be reached (connection refused, DNS, connect timeout)."""

    code = grpc.StatusCode.UNAVAILABLE
    transient = True


class ProviderTimeoutError(TurnError):
    code = grpc.StatusCode.DEADLINE_EXCEEDED
    transient = True


class ProviderRateLimitedError(TurnError):
    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    transient = True
    rate_limited = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ProviderRejectedError(TurnError):
    """The provider refused the request as invalid (an upstream 400/404/422)."""

    code = grpc.StatusCode.INVALID_ARGUMENT


class ContextOverflowError(ProviderRejectedError):
    """The provider refused the prompt as longer than the model's window. The worker compacts
    and asks again; a client sees this only when that did not help."""

    def __init__(self, message: str, window: int | None = None) -> None:
        super().__init__(message)
        self.window = window  # the window the provider named, when it named one


class InputTooLargeError(TurnError):
    """The turn's new input alone does not fit the model's window: no compaction can admit it."""

    code = grpc.StatusCode.OUT_OF_RANGE


class ProviderFailedError(TurnError):
    """The provider answered with an error or broke off its answer."""

    code = grpc.StatusCode.INTERNAL


class ProviderAuthError(ProviderFailedError):
    """The provider refused the credentials (401, 403): not asked again with the same key."""

    key_refused = True


class ProviderOverloadedError(ProviderFailedError):
    """The provider said it cannot answer now (408, 5xx, Anthropic's 529 `overloaded_error`)."""

    transient = True

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class SessionStoreError(TurnError):
    """The session store failed: the transcript could not be read, locked or written."""

    code = grpc.StatusCode.UNAVAILABLE
    from_store = True


class OverBudgetError(TurnError):
    """The caller's budget (TurnRequest.budget) leaves no room for the turn's prompt."""

    code = grpc.StatusCode.RESOURCE_EXHAUSTED
    over_budget = True
