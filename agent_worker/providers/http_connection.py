"""One kept-alive HTTP/1.1 connection of the provider's client (http_client.py): it sends a
request and parses the answer with httptools as bytes arrive, holding at most READ_HIGH_WATER
bytes for its reader before it pauses reading."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable

import httptools

READ_HIGH_WATER = 1 << 20


class UpstreamError(Exception):
    """The upstream could not be asked or did not answer properly."""


class UpstreamUnreachable(UpstreamError):
    """No connection could be made."""


class UpstreamTimeout(UpstreamError):
    """Connecting, or waiting for the next bytes of the answer, took too long."""


class UpstreamBroken(UpstreamError):
    """The connection broke, or the bytes were not HTTP."""


class Connection(asyncio.Protocol):
    """One TCP connection and the state of the answer it is reading."""

    def __init__(
        self, loop: asyncio.AbstractEventLoop, on_lost: Callable[[Connection], None]
    ) -> None:
        self._loop = loop
        self._on_lost = on_lost  # told once the connection is gone
        self._parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.closed = False
        self._timer: asyncio.TimerHandle | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.in_request = False
        self.status = 0
        self.location = ""  # where a redirect points
        self.retry_after = ""  # what an error answer asks the client to wait
        self.headers_done = False
        self.complete = False
        self.keep_alive = False  # read when the answer completes: the parser forgets it after
        self.received_any = False
        self.error: UpstreamError | None = None
        self.blocks: deque[bytes] = deque()
        self._buffered = 0
        self._paused = False
        self._length_known = False  # a content-length or chunked: else the body ends at EOF

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        if not self.in_request:  # bytes nobody asked for: the connection cannot be trusted
            self.close()
            return
        self.received_any = True
        self._idle_since = self._loop.time()
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserError as error:
            self._fail(UpstreamBroken(f"the answer is not valid HTTP: {error}"))
            self.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost(self)
        if self.in_request and not self.complete:
            if self.headers_done and not self._length_known and exc is None:
                self.complete = True  # a body without length ends when the connection does
            else:
                reason = f": {exc}" if exc is not None else ""
                self._fail(UpstreamBroken(f"the connection was closed mid-answer{reason}"))
        self._wake()

    # httptools callbacks

    def on_header(self, name: bytes, value: bytes) -> None:
        name = name.lower()
        if name in (b"content-length", b"transfer-encoding"):
            self._length_known = True
        elif name == b"location":
            self.location = value.decode("latin-1")
        elif name == b"retry-after":
            self.retry_after = value.decode("latin-1")

    def on_headers_complete(self) -> None:
        status = self._parser.get_status_code()
        if status >= 200:  # 1xx answers are informational; the real one follows
            self.status = status
            self.headers_done = True
            self._wake()

    def on_body(self, body: bytes) -> None:
        self.blocks.append(body)
        self._buffered += len(body)
        if self._buffered > READ_HIGH_WATER and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pause_reading()
        self._wake()

    def on_message_complete(self) -> None:
        if self.headers_done:
            self.complete = True
            self.keep_alive = self._parser.should_keep_alive()
            self._wake()
        else:
            self._length_known = False

    # used by HttpClient and UpstreamResponse

    def send(self, head: bytes, body: bytes, read_timeout: float) -> None:
        assert self.transport is not None
        self.in_request = True
        self.transport.write(b"%sContent-Length: %d\r\n\r\n%s" % (head, len(body), body))
        self._idle_since = now = self._loop.time()
        self._timer = self._loop.call_at(now + read_timeout, self._check_idle, read_timeout)

    def wait(self) -> asyncio.Future[None]:
        """A future set by the next bytes, the end of the answer or a failure."""
        self._idle_since = self._loop.time()
        self._waiter = waiter = self._loop.create_future()
        return waiter

    def take_blocks(self) -> bytes:
        blocks = self.blocks
        taken = blocks.popleft() if len(blocks) == 1 else b"".join(blocks)
        blocks.clear()
        self._buffered = 0
        if self._paused and self.transport is not None:
            self._paused = False
            self.transport.resume_reading()
        return taken

    def finish(self) -> bool:
        """Ends the request; True if the connection can carry another one."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        reusable = self.keep_alive and not self.closed and self.error is None and not self._paused
        self._reset()
        if not reusable:
            self.close()
        return reusable

    def close(self) -> None:
        if self.transport is not None and not self.closed:
            self.transport.close()

    def is_closing(self) -> bool:
        return self.transport is None or self.transport.is_closing()

    def _check_idle(self, read_timeout: float) -> None:
        """The read timeout: one timer per request, moved on while bytes keep coming."""
        now = self._loop.time()
        waiting = self._waiter is not None and not self._waiter.done()
        if self.complete or self.error is not None:
            return
        if waiting and now - self._idle_since >= read_timeout:
            self._fail(UpstreamTimeout(f"no answer for {read_timeout:g}s"))
            self.close()
            return
        deadline = self._idle_since + read_timeout if waiting else now + read_timeout
        self._timer = self._loop.call_at(deadline, self._check_idle, read_timeout)

    def _fail(self, error: UpstreamError) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None:
            self._waiter = None
            if not waiter.done():
                waiter.set_result(None)
