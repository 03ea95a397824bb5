"""A lean HTTP/1.1 client for one upstream URL: keep-alive connections, httptools' C parser.

The worker makes one POST per turn, always to the same URL with the same headers. aiohttp spent
about 200 µs of CPU per request on that (request objects, header multidicts, a timer per read,
stream readers); here the request head is built once and the answer is parsed by httptools (the
parser uvicorn uses), about 40 µs. Measured in `docs/performance.md`.

What it does: keep-alive connections reused last-in first-out, TLS for https, a connect timeout,
a read timeout that counts only while the caller waits for bytes, reading paused while more than
READ_HIGH_WATER bytes wait for the caller (so a slow caller slows the upstream, not our memory),
and one retry on a fresh connection when a kept-alive one turns out closed before any answer.
Proxies as every HTTP client honours them: a configured one, else HTTPS_PROXY / HTTP_PROXY with
NO_PROXY (read by the standard library's rules); https goes through a CONNECT tunnel, http is
sent to the proxy in absolute form; `user:password@` in the proxy URL becomes Basic auth.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import urllib.request
from collections import deque

import httptools
import yarl

READ_HIGH_WATER = 1 << 20
MAX_IDLE_CONNECTIONS = 256


class UpstreamError(Exception):
    """The upstream could not be asked or did not answer properly."""


class UpstreamUnreachable(UpstreamError):
    """No connection could be made."""


class UpstreamTimeout(UpstreamError):
    """Connecting, or waiting for the next bytes of the answer, took too long."""


class UpstreamBroken(UpstreamError):
    """The connection broke, or the bytes were not HTTP."""


def proxy_for(url: yarl.URL, configured: str | None) -> yarl.URL | None:
    """The proxy to reach `url` through: `configured` when set, else the environment's
    HTTPS_PROXY / HTTP_PROXY unless NO_PROXY names the host; None for a direct connection."""
    if configured:
        proxy = yarl.URL(configured)
    else:
        proxies = urllib.request.getproxies_environment()
        # Not in typeshed, but the standard library's own NO_PROXY rules (suffixes, ports, *).
        if urllib.request.proxy_bypass_environment(url.raw_host or "", proxies):  # type: ignore[attr-defined]
            return None
        chosen = proxies.get(url.scheme)
        if not chosen:
            return None
        proxy = yarl.URL(chosen if "://" in chosen else f"http://{chosen}")
    if proxy.scheme != "http" or not proxy.raw_host:
        raise ValueError(f"proxy must be an http:// URL, got {proxy.with_password(None)}")
    return proxy


def _proxy_authorization(proxy: yarl.URL) -> list[str]:
    if proxy.user is None:
        return []
    credentials = f"{proxy.user}:{proxy.password or ''}".encode()
    return [f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}"]


def request_head(url: yarl.URL, headers: dict[str, str], proxy: yarl.URL | None = None) -> bytes:
    """The request line and fixed headers of every POST, up to (not including) content-length.
    Through a proxy, plain http names the whole URL (absolute form) and authenticates to the
    proxy; https is tunnelled, so its requests look as they would directly."""
    target = url.raw_path_qs
    lines: list[str] = []
    if proxy is not None and url.scheme == "http":
        target = str(url.with_fragment(None))
        lines = _proxy_authorization(proxy)
    # Canonical capitals for the framing headers: names are case-insensitive, but a forward
    # proxy seen here (proxy.py 2.4) looked only for "Content-Length" and broke the request.
    lines = [f"POST {target} HTTP/1.1", f"Host: {_host_header(url)}", *lines]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    for line in lines:
        if "\r" in line or "\n" in line:
            raise ValueError(f"a header holds a line break: {line.split(':')[0]!r}")
    return ("\r\n".join(lines) + "\r\n").encode("latin-1")


def _host_header(url: yarl.URL) -> str:
    host = url.raw_host or ""
    if url.explicit_port is not None:
        return _authority(host, url.explicit_port)
    return f"[{host}]" if ":" in host else host


class _Connection(asyncio.Protocol):
    """One TCP connection and the state of the answer it is reading."""

    def __init__(self, loop: asyncio.AbstractEventLoop, client: HttpClient) -> None:
        self._loop = loop
        self._client = client
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
        self._client.forget(self)
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


class UpstreamResponse:
    """An answer being read; `release()` must be called once the caller is done with it."""

    __slots__ = ("status", "location", "_connection", "_client")

    def __init__(self, client: HttpClient, connection: _Connection) -> None:
        self._client = client
        self._connection = connection
        self.status = connection.status
        self.location = connection.location  # of a redirect, which is not followed

    async def next_block(self) -> bytes | None:
        """The body bytes that arrived since the last call (waiting for some), None at its end."""
        connection = self._connection
        while True:
            if connection.blocks:
                return connection.take_blocks()
            if connection.error is not None:
                raise connection.error
            if connection.complete:
                return None
            await connection.wait()

    async def read(self, limit: int) -> bytes:
        """The whole body, cut at `limit` bytes (for error answers)."""
        parts: list[bytes] = []
        size = 0
        while size < limit and (block := await self.next_block()) is not None:
            parts.append(block)
            size += len(block)
        return b"".join(parts)[:limit]

    def release(self) -> None:
        """Gives the connection back for reuse if the answer was read to its end, else closes
        it (an answer cut short leaves unread bytes on it)."""
        self._client.give_back(self._connection)


class HttpClient:
    """POSTs to one URL over kept-alive connections."""

    def __init__(
        self,
        url: yarl.URL,
        headers: dict[str, str],
        *,
        connect_timeout: float,
        read_timeout: float,
        proxy: yarl.URL | None = None,
    ) -> None:
        if url.scheme not in ("http", "https") or not url.raw_host:
            raise ValueError(f"not an http(s) URL: {url}")
        self._host = url.raw_host
        self._port = url.port or (443 if url.scheme == "https" else 80)
        self._ssl = ssl.create_default_context() if url.scheme == "https" else None
        self._proxy = proxy
        self._proxy_address = ("", 0) if proxy is None else (proxy.raw_host or "", proxy.port or 80)
        self._head = request_head(url, headers, proxy)
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._idle: list[_Connection] = []
        self._open: set[_Connection] = set()

    async def post(self, body: bytes) -> UpstreamResponse:
        """Sends the request and waits for the answer's status line and headers."""
        for attempt in range(2):
            connection = self._idle_connection() if attempt == 0 else None
            reused = connection is not None
            if connection is None:
                connection = await self._connect()
            connection.send(self._head, body, self._read_timeout)
            try:
                while not connection.headers_done:
                    if connection.error is not None:
                        raise connection.error
                    await connection.wait()
            except UpstreamBroken:
                connection.finish()
                if reused and not connection.received_any:
                    continue  # the upstream had closed this kept-alive connection: a new one
                raise
            except BaseException:
                connection.finish()
                raise
            return UpstreamResponse(self, connection)
        raise AssertionError("unreachable")

    def give_back(self, connection: _Connection) -> None:
        if connection.finish():
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
            else:
                connection.close()

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)

    def close(self) -> None:
        self._idle.clear()
        for connection in list(self._open):
            connection.close()

    def _idle_connection(self) -> _Connection | None:
        while self._idle:
            connection = self._idle.pop()
            # closing: the upstream hung up and connection_lost is on its way
            if not connection.closed and not connection.is_closing():
                return connection
        return None

    async def _connect(self) -> _Connection:
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        proxy = self._proxy
        via = "" if proxy is None else f" through the proxy {proxy.host}:{proxy.port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                if proxy is None:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop, self),
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl is not None else None,
                    )
                elif self._ssl is None:
                    _, connection = await loop.create_connection(
                        lambda: _Connection(loop, self), *self._proxy_address
                    )
                else:
                    connection = await self._tunnel(loop, proxy, self._ssl)
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {where}{via} took over {self._connect_timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError) as error:
            raise UpstreamUnreachable(f"cannot connect to {where}{via}: {error}") from error
        self._open.add(connection)
        return connection

    async def _tunnel(
        self, loop: asyncio.AbstractEventLoop, proxy: yarl.URL, context: ssl.SSLContext
    ) -> _Connection:
        """A CONNECT tunnel through the proxy, then TLS with the upstream inside it."""
        transport, handshake = await loop.create_connection(
            lambda: _TunnelHandshake(loop), *self._proxy_address
        )
        authority = _authority(self._host, self._port)
        lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}"]
        lines += _proxy_authorization(proxy)
        transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
        try:
            status_line = await handshake.answer
            parts = status_line.split(" ", 2)
            if len(parts) < 2 or parts[1] != "200":
                raise UpstreamUnreachable(f"the proxy refused the tunnel: {status_line}")
            connection = _Connection(loop, self)
            secured = await loop.start_tls(
                transport, connection, context, server_hostname=self._host
            )
        except BaseException:
            transport.close()
            raise
        if secured is None:
            raise UpstreamUnreachable("the proxy closed the tunnel during the TLS handshake")
        connection.connection_made(secured)
        return connection


def _authority(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _TunnelHandshake(asyncio.Protocol):
    """Reads the proxy's answer to CONNECT: its status line, once the headers are complete."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.answer: asyncio.Future[str] = loop.create_future()
        self._received = bytearray()

    def data_received(self, data: bytes) -> None:
        self._received += data
        if b"\r\n\r\n" in self._received and not self.answer.done():
            status_line = bytes(self._received).split(b"\r\n", 1)[0]
            self.answer.set_result(status_line.decode("latin-1"))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.answer.done():
            self.answer.set_exception(
                UpstreamUnreachable("the proxy closed the connection before answering CONNECT")
            )
