"""A lean HTTP/1.1 client for one upstream URL: keep-alive connections, httptools' C parser.

The worker makes one POST per turn, always to the same URL with the same headers. aiohttp spent
about 200 µs of CPU per request on that (request objects, header multidicts, a timer per read,
stream readers); here the request head is built once and the answer is parsed by httptools (the
parser uvicorn uses), about 40 µs. Measured in `docs/performance.md`.

What it does: keep-alive connections reused last-in first-out, TLS for https, a connect timeout,
a read timeout that counts only while the caller waits for bytes, reading paused while more than
READ_HIGH_WATER bytes wait for the caller (so a slow caller slows the upstream, not our memory),
and one retry on a fresh connection when a kept-alive one turns out closed before any answer.
Proxies as every HTTP client honours them (proxy.py): https goes through a CONNECT tunnel, http
is sent to the proxy in absolute form.
"""

from __future__ import annotations

import asyncio
import ssl

import yarl

from agent_worker.providers.http_connection import (
    Connection,
    UpstreamBroken,
    UpstreamError,
    UpstreamTimeout,
    UpstreamUnreachable,
)
from agent_worker.providers.proxy import open_tunnel, proxy_authorization, proxy_for
from agent_worker.providers.upstream_errors import retry_after_seconds
from services.network import join_address

__all__ = [
    "HttpClient",
    "UpstreamBroken",
    "UpstreamError",
    "UpstreamResponse",
    "UpstreamTimeout",
    "UpstreamUnreachable",
    "proxy_for",
    "request_head",
]

MAX_IDLE_CONNECTIONS = 256


def request_head(url: yarl.URL, headers: dict[str, str], proxy: yarl.URL | None = None) -> bytes:
    """The request line and fixed headers of every POST, up to (not including) content-length.
    Through a proxy, plain http names the whole URL (absolute form) and authenticates to the
    proxy; https is tunnelled, so its requests look as they would directly."""
    target = url.raw_path_qs
    lines: list[str] = []
    if proxy is not None and url.scheme == "http":
        target = str(url.with_fragment(None))
        lines = proxy_authorization(proxy)
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
        return join_address(host, url.explicit_port)
    return f"[{host}]" if ":" in host else host


class UpstreamResponse:
    """An answer being read; `release()` must be called once the caller is done with it."""

    __slots__ = ("status", "location", "retry_after", "_connection", "_client")

    def __init__(self, client: HttpClient, connection: Connection) -> None:
        self._client = client
        self._connection = connection
        self.status = connection.status
        self.location = connection.location  # of a redirect, which is not followed
        self.retry_after = retry_after_seconds(connection.retry_after)

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
        self._idle: list[Connection] = []
        self._open: set[Connection] = set()

    async def post(self, body: bytes, more_head: bytes = b"") -> UpstreamResponse:
        """Sends the request and waits for the answer's status line and headers. `more_head`:
        header lines for this request alone (each ending in CRLF), such as its traceparent."""
        for attempt in range(2):
            connection = self._idle_connection() if attempt == 0 else None
            reused = connection is not None
            if connection is None:
                connection = await self._connect()
            head = self._head + more_head if more_head else self._head
            connection.send(head, body, self._read_timeout)
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

    def give_back(self, connection: Connection) -> None:
        if connection.finish():
            if len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(connection)
            else:
                connection.close()

    def forget(self, connection: Connection) -> None:
        self._open.discard(connection)

    def close(self) -> None:
        self._idle.clear()
        for connection in list(self._open):
            connection.close()

    def _idle_connection(self) -> Connection | None:
        while self._idle:
            connection = self._idle.pop()
            # closing: the upstream hung up and connection_lost is on its way
            if not connection.closed and not connection.is_closing():
                return connection
        return None

    async def _connect(self) -> Connection:
        loop = asyncio.get_running_loop()
        where = f"{self._host}:{self._port}"
        proxy = self._proxy
        via = "" if proxy is None else f" through the proxy {proxy.host}:{proxy.port}"
        try:
            async with asyncio.timeout(self._connect_timeout):
                if proxy is None:
                    _, connection = await loop.create_connection(
                        lambda: Connection(loop, self.forget),
                        self._host,
                        self._port,
                        ssl=self._ssl,
                        server_hostname=self._host if self._ssl is not None else None,
                    )
                elif self._ssl is None:
                    _, connection = await loop.create_connection(
                        lambda: Connection(loop, self.forget), *self._proxy_address
                    )
                else:
                    tunnel = await open_tunnel(loop, proxy, self._host, self._port)
                    connection = Connection(loop, self.forget)
                    try:
                        secured = await loop.start_tls(
                            tunnel, connection, self._ssl, server_hostname=self._host
                        )
                    except BaseException:
                        tunnel.close()
                        raise
                    if secured is None:
                        raise ConnectionError("the proxy closed the tunnel during TLS")
                    connection.connection_made(secured)
        except TimeoutError:
            raise UpstreamTimeout(
                f"connecting to {where}{via} took over {self._connect_timeout:g}s"
            ) from None
        except (OSError, ssl.SSLError) as error:
            raise UpstreamUnreachable(f"cannot connect to {where}{via}: {error}") from error
        self._open.add(connection)
        return connection
