"""Fetches an image or file a request names by URL, without letting the request reach inside.

Every hop (the URL, then each redirect) is checked before it is fetched: its scheme (http or
https), its host against the allow-list, and every address its name resolves to, which must all
be public (no private, loopback, link-local, multicast or reserved range, IPv4-mapped ones
included; loopback only where `allowLoopback` says). The connection then goes to the address
that was checked, not to a second lookup, so a name cannot resolve elsewhere in between. The
whole fetch has one deadline and a byte cap, checked as the body arrives. HTTP is spoken with
h11 (TLS through the standard library, verified against the system's CAs or SSL_CERT_FILE).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from dataclasses import dataclass
from urllib.parse import quote, urljoin, urlsplit

import h11

from services.input_sources_config import UrlFetchSection

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_READ_SIZE = 64 * 1024
_PATH_SAFE = "/%:@!$&'()*+,;=-._~"


class FetchRefused(Exception):
    """Why a URL was not fetched, in words a client may read (no resolved address)."""


@dataclass(frozen=True, slots=True)
class Fetched:
    media_type: str  # the answer's content type, parameters removed ("" when it gave none)
    data: bytes
    url: str  # where it came from, after redirects


def host_allowed(host: str, allowlist: list[str]) -> bool:
    """An exact name, or a `*.domain` entry for the domain's subdomains (not the domain)."""
    if not allowlist:
        return True
    host = host.lower().rstrip(".")
    for entry in allowlist:
        if entry.startswith("*."):
            if host.endswith(entry[1:]) and host != entry[2:]:
                return True
        elif host == entry:
            return True
    return False


def address_allowed(address: str, allow_loopback: bool) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if ip.is_loopback:
        return allow_loopback
    return ip.is_global and not ip.is_multicast


async def _addresses(host: str, port: int, policy: UrlFetchSection) -> list[str]:
    """Every address `host` resolves to, all of them allowed; refuses otherwise."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror:
        raise FetchRefused(f"the host {host!r} could not be resolved") from None
    addresses = list(dict.fromkeys(str(info[4][0]) for info in infos))
    if not addresses or not all(address_allowed(a, policy.allow_loopback) for a in addresses):
        raise FetchRefused(f"the host {host!r} resolves to a private, loopback or reserved address")
    return addresses


def _target(url: str, policy: UrlFetchSection) -> tuple[str, str, int, str]:
    """(scheme, host, port, request target) of a URL the policy lets be fetched."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise FetchRefused("only http:// and https:// URLs are fetched")
    host = parts.hostname
    if not host:
        raise FetchRefused("the URL names no host")
    if parts.username or parts.password:
        raise FetchRefused("a URL with credentials is not fetched")
    if not host_allowed(host, policy.url_allowlist):
        raise FetchRefused(f"the host {host!r} is not in urlAllowlist")
    try:
        port = parts.port or (443 if scheme == "https" else 80)
    except ValueError:
        raise FetchRefused("the URL's port is invalid") from None
    try:
        host = host.encode("idna").decode("ascii")  # an international name, as DNS spells it
    except UnicodeError:
        raise FetchRefused("the URL's host name is invalid") from None
    # Spaces and non-ASCII characters percent-encoded; what is encoded already stays.
    target = quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        target += "?" + quote(parts.query, safe=_PATH_SAFE + "?")
    return scheme, host, port, target


async def fetch(url: str, policy: UrlFetchSection, max_bytes: int) -> Fetched:
    """The body at `url`, within the policy's redirects and deadline and `max_bytes`."""
    try:
        async with asyncio.timeout(policy.timeout_ms / 1000):
            for _ in range(policy.max_redirects + 1):
                answer = await _get(url, policy, max_bytes)
                if isinstance(answer, Fetched):
                    return answer
                url = urljoin(url, answer)
            raise FetchRefused(f"more than {policy.max_redirects} redirects (maxRedirects)")
    except TimeoutError:
        raise FetchRefused(f"no whole answer within {policy.timeout_ms} ms (timeoutMs)") from None


async def _get(url: str, policy: UrlFetchSection, max_bytes: int) -> Fetched | str:
    """One hop: the body, or the next URL (a redirect's Location)."""
    scheme, host, port, target = _target(url, policy)
    address = (await _addresses(host, port, policy))[0]
    tls = ssl.create_default_context() if scheme == "https" else None
    try:
        reader, writer = await asyncio.open_connection(
            address, port, ssl=tls, server_hostname=host if tls else None
        )
    except (OSError, ssl.SSLError) as error:
        raise FetchRefused(f"could not connect to {host!r}: {error.strerror or error}") from None
    try:
        return await _exchange(reader, writer, host, port, target, url, max_bytes)
    finally:
        writer.close()


async def _exchange(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    host: str,
    port: int,
    target: str,
    url: str,
    max_bytes: int,
) -> Fetched | str:
    connection = h11.Connection(h11.CLIENT)
    name = f"[{host}]" if ":" in host else host  # an IPv6 literal
    authority = name if port in (80, 443) else f"{name}:{port}"
    request = h11.Request(
        method="GET",
        target=target,
        headers=[
            ("host", authority),
            ("user-agent", "clawgate"),
            ("accept", "*/*"),
            ("connection", "close"),
        ],
    )
    body = bytearray()
    response: h11.Response | None = None
    media_type = ""
    try:
        writer.write(connection.send(request) + connection.send(h11.EndOfMessage()))
        while True:
            event = connection.next_event()
            if event is h11.NEED_DATA:
                connection.receive_data(await reader.read(_READ_SIZE))
                continue
            if isinstance(event, h11.Response):
                response = event
                headers = {
                    name.decode().lower(): value.decode("latin-1") for name, value in event.headers
                }
                if event.status_code in _REDIRECTS:
                    location = headers.get("location")
                    if not location:
                        raise FetchRefused(f"a {event.status_code} redirect without a Location")
                    return location
                if event.status_code != 200:
                    raise FetchRefused(f"the server answered {event.status_code}")
                length = headers.get("content-length", "")
                if length.isdigit() and int(length) > max_bytes:
                    raise FetchRefused(f"it is larger than {max_bytes} bytes (maxBytes)")
                media_type = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            elif isinstance(event, h11.Data):
                body += event.data
                if len(body) > max_bytes:
                    raise FetchRefused(f"it is larger than {max_bytes} bytes (maxBytes)")
            elif isinstance(event, h11.EndOfMessage):
                assert response is not None
                return Fetched(media_type, bytes(body), url)
            elif isinstance(event, h11.ConnectionClosed):
                raise FetchRefused("the server closed the connection before the whole answer")
    except (h11.ProtocolError, OSError) as error:
        raise FetchRefused(f"the exchange with the server failed: {error}") from None
