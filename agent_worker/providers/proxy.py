"""Forward proxies for the provider's HTTP client, as every HTTP client honours them.

A configured proxy, else HTTPS_PROXY / HTTP_PROXY with NO_PROXY (read by the standard library's
rules); `user:password@` in the proxy URL becomes Basic auth. https goes through a CONNECT
tunnel (`open_tunnel`), plain http is sent to the proxy in absolute form (http_client.py).
"""

from __future__ import annotations

import asyncio
import base64
import urllib.request

import yarl

from services.network import join_address


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


def proxy_authorization(proxy: yarl.URL) -> list[str]:
    """The header line that authenticates to the proxy, when its URL carries a user."""
    if proxy.user is None:
        return []
    credentials = f"{proxy.user}:{proxy.password or ''}".encode()
    return [f"Proxy-Authorization: Basic {base64.b64encode(credentials).decode()}"]


async def open_tunnel(
    loop: asyncio.AbstractEventLoop, proxy: yarl.URL, host: str, port: int
) -> asyncio.Transport:
    """A connection through the proxy to host:port (CONNECT answered 200), ready for TLS.
    Raises OSError (ConnectionError) when the proxy refuses or hangs up."""
    transport, handshake = await loop.create_connection(
        lambda: _TunnelHandshake(loop), proxy.raw_host or "", proxy.port or 80
    )
    authority = join_address(host, port)
    lines = [f"CONNECT {authority} HTTP/1.1", f"Host: {authority}", *proxy_authorization(proxy)]
    transport.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    try:
        status_line = await handshake.answer
        parts = status_line.split(" ", 2)
        if len(parts) < 2 or parts[1] != "200":
            raise ConnectionRefusedError(f"the proxy refused the tunnel: {status_line}")
    except BaseException:
        transport.close()
        raise
    return transport


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
                ConnectionError("the proxy closed the connection before answering CONNECT")
            )
