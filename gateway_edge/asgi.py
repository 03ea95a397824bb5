"""Plain ASGI helpers for the hot-path endpoints: read the body, send bytes, watch for the
client going away."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Generator
from types import TracebackType
from typing import Any

import orjson
from starlette.types import Receive, Scope, Send

from gateway_edge.errors import (
    JSON_CONTENT_TYPE,
    ApiError,
    bad_request,
    body_too_large,
    internal_error,
    rendered,
)
from services import tracing

log = logging.getLogger("clawgate.edge")

JSON_HEADERS = [JSON_CONTENT_TYPE]
STREAM_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]
CLIENT_CLOSED_REQUEST = 499  # nginx's status for it; nobody receives it, logs show it


class ClientDisconnected(Exception):
    """The HTTP client closed the connection before the answer was complete."""


async def send_bytes(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes
) -> None:
    length = (b"content-length", str(len(body)).encode())
    await send({"type": "http.response.start", "status": status, "headers": [*headers, length]})
    await send({"type": "http.response.body", "body": body})


async def send_error(send: Send, error: ApiError) -> None:
    await send_bytes(send, *rendered(error))


class SendRest:
    """The rest of a `send` that `send_now` began and that had to wait (its socket's buffer was
    full): awaiting it drives the same coroutine on, exactly as awaiting `send` would have."""

    __slots__ = ("_step", "_waiting")

    def __init__(self, step: Coroutine[Any, Any, None], waiting: Any) -> None:
        self._step = step
        self._waiting = waiting  # what the send waits on: handed to the awaiting task as is

    def __await__(self) -> Generator[Any, None, None]:
        step, waiting = self._step, self._waiting
        while True:
            try:
                yield waiting
            except BaseException as error:  # a cancel of the awaiting task goes on into the send
                try:
                    waiting = step.throw(error)
                except StopIteration:
                    return
            else:
                try:
                    waiting = step.send(None)
                except StopIteration:
                    return


def send_now(send: Send, message: dict[str, object]) -> Awaitable[None] | None:
    """Sends `message` from plain code (a callback, another stream's task) when the server
    takes it at once, as it does unless the socket's buffer is full: returns None then, else
    the rest to await. Writing a token this way spares waking its stream's task for it."""
    step = send(message)  # type: ignore[arg-type]
    if not isinstance(step, Coroutine):
        return step  # not a coroutine: nothing can be run of it here
    try:
        waiting = step.send(None)
    except StopIteration:
        return None
    return SendRest(step, waiting)


def body_part(body: bytes) -> dict[str, object]:
    """A piece of a streamed response body (more follows)."""
    return {"type": "http.response.body", "body": body, "more_body": True}


async def read_json(receive: Receive, headers: dict[bytes, bytes], limit: int) -> Any:
    """The request's body as parsed JSON (a 413 past `limit` bytes, a 400 when not JSON)."""
    body = await read_body(receive, headers.get(b"content-length"), limit)
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        raise bad_request("The request body is not valid JSON.") from None


async def read_json_object(
    receive: Receive, headers: dict[bytes, bytes], limit: int
) -> dict[str, Any]:
    """`read_json` for the endpoints whose body must be an object (a 400 otherwise)."""
    document = await read_json(receive, headers, limit)
    if not isinstance(document, dict):
        raise bad_request("The request body must be a JSON object.")
    return document


async def read_body(receive: Receive, declared: bytes | None, limit: int) -> bytes | bytearray:
    """The body as it came in one piece (most requests), or grown in one buffer: no list of
    chunks and no joined copy beside it (a 20 MB body took three times its size at its peak)."""
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise body_too_large(limit)
    body: bytes | bytearray = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected
        chunk = message.get("body", b"")
        if not body:
            body = chunk
        else:
            if isinstance(body, bytes):
                body = bytearray(body)
            body += chunk
        if len(body) > limit:
            raise body_too_large(limit)
        if not message.get("more_body", False):
            return body


def request_headers(scope: Scope) -> dict[bytes, bytes]:
    """The request's headers by their (lowercase) names; the first of repeated headers wins."""
    return dict(reversed(scope["headers"]))


class cancelled_on_disconnect:  # noqa: N801 - used as a context-manager function would be
    """Cancels the work inside when the client goes away; it then raises ClientDisconnected.
    One watcher per request, reading the rest of `receive` (the body must be read already).
    A class rather than @asynccontextmanager: it runs for every request, and a generator-based
    manager costs more per entry. The watcher must not reach this object: a cancelled watcher
    keeps its frames, and a cycle through them would leave every request to the garbage
    collector, whose passes hold the loop (tests/gateway_edge/test_asgi.py)."""

    __slots__ = ("_receive", "_watcher")

    def __init__(self, receive: Receive) -> None:
        self._receive = receive
        self._watcher: asyncio.Task[None] | None = None

    async def __aenter__(self) -> None:
        work = asyncio.current_task()
        assert work is not None
        self._watcher = asyncio.create_task(_cancel_when_gone(self._receive, work))

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        watcher, self._watcher = self._watcher, None
        assert watcher is not None
        # It ends by itself only when the client went away (or its receive failed).
        gone = watcher.done() and not watcher.cancelled() and watcher.exception() is None
        watcher.cancel()
        if kind is asyncio.CancelledError and gone:
            current = asyncio.current_task()
            assert current is not None
            current.uncancel()
            raise ClientDisconnected from None


async def _cancel_when_gone(receive: Receive, work: asyncio.Task[object]) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass
    work.cancel()


async def answered_or_refused(handle: Callable[[Send], Awaitable[None]], send: Send) -> None:
    """Runs a handler and answers its failure once: an ApiError as its JSON error, anything
    else as a 500 without details, a client gone with 499 (for logs and metrics). Once the
    handler has sent something, a failure is its own to report (in its stream)."""
    started = False

    async def send_tracked(message: dict[str, object]) -> None:
        nonlocal started
        started = True
        await send(message)  # type: ignore[arg-type]

    try:
        await handle(send_tracked)  # type: ignore[arg-type]
    except ClientDisconnected:
        log.info("the client went away before the answer; its turn was cancelled")
        if not started:  # nobody receives it (the server drops it); logs and metrics show it
            await send_bytes(send, CLIENT_CLOSED_REQUEST, [], b"")
    except ApiError as error:
        tracing.fail_current(error.message, error.code or error.type)
        if not started:
            await send_error(send, error)
    except Exception as error:
        tracing.fail_current("unexpected error", type(error).__name__)
        log.exception("unexpected error")
        if not started:
            await send_error(send, internal_error())
