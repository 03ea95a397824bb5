"""The upstream HTTP client against a real TCP server that answers raw bytes, so that every
framing, keep-alive and failure case is the server's choice."""

from __future__ import annotations

import asyncio
import os
import shutil
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import yarl

from agent_worker.providers.http_client import (
    HttpClient,
    UpstreamBroken,
    UpstreamTimeout,
    UpstreamUnreachable,
    proxy_for,
    request_head,
)
from agent_worker.providers.http_connection import READ_HIGH_WATER
from devkit.processes import free_port

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
OK_HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"


class RawServer:
    """Accepts connections and hands each request to `answer`; counts connections."""

    def __init__(self, answer: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.answer = answer
        self.tls = tls
        self.connections = 0
        self.requests: list[bytes] = []
        self.port = free_port()
        self._server: asyncio.Server | None = None

    @property
    def url(self) -> yarl.URL:
        return yarl.URL(f"http://127.0.0.1:{self.port}/v1/chat/completions")

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.tls)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                await self.answer(reader, writer)
                if writer.is_closing():
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


def client(url: yarl.URL, read_timeout: float = 5.0) -> HttpClient:
    return HttpClient(
        url, {"content-type": "application/json"}, connect_timeout=2, read_timeout=read_timeout
    )


async def body_of(http: HttpClient, payload: bytes = b"{}") -> tuple[int, bytes]:
    response = await http.post(payload)
    try:
        return response.status, await response.read(1 << 30)
    finally:
        response.release()


def chunked(*parts: bytes) -> bytes:
    return b"".join(b"%x\r\n%s\r\n" % (len(part), part) for part in parts) + b"0\r\n\r\n"


async def answer_chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.write(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n" + chunked(b"data: a\n\n", b"b"))
    await writer.drain()


@pytest.fixture
async def chunked_server() -> AsyncIterator[RawServer]:
    async with RawServer(answer_chunked) as server:
        yield server


async def test_sends_one_request_with_its_headers_and_reads_a_chunked_answer(
    chunked_server: RawServer,
) -> None:
    http = client(chunked_server.url)
    assert await body_of(http, b'{"x":1}') == (200, b"data: a\n\nb")
    http.close()
    sent = chunked_server.requests[0]
    assert sent.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{chunked_server.port}\r\n".encode() in sent
    assert b"content-type: application/json\r\n" in sent
    assert sent.endswith(b'Content-Length: 7\r\n\r\n{"x":1}')


async def test_connections_are_kept_alive_and_reused(chunked_server: RawServer) -> None:
    http = client(chunked_server.url)
    for _ in range(5):
        assert await body_of(http) == (200, b"data: a\n\nb")
    await asyncio.gather(*(body_of(http) for _ in range(3)))
    http.close()
    assert len(chunked_server.requests) == 8
    assert chunked_server.connections == 3  # one for the sequential five, then three at once


async def test_an_answer_left_unread_closes_its_connection(chunked_server: RawServer) -> None:
    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n" + b"3\r\nabc\r\n")
        await writer.drain()
        await asyncio.sleep(0.3)

    async with RawServer(stall) as server:
        http = client(server.url)
        for _ in range(2):
            response = await http.post(b"{}")
            assert await response.next_block() == b"abc"
            response.release()  # the rest never read: this connection cannot carry another
        http.close()
        assert server.connections == 2


async def test_a_body_without_length_ends_with_the_connection() -> None:
    async def close_delimited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK_HEAD + b"\r\nall of it")
        await writer.drain()
        writer.close()

    async with RawServer(close_delimited) as server:
        http = client(server.url)
        assert await body_of(http) == (200, b"all of it")
        assert await body_of(http) == (200, b"all of it")  # and not reused
        http.close()
        assert server.connections == 2


async def test_a_kept_alive_connection_the_server_closed_is_replaced() -> None:
    async def answer_then_hang_up(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        # Says keep-alive, then closes anyway (an idle timeout on the server's side).
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\nok")
        await writer.drain()
        writer.close()

    async with RawServer(answer_then_hang_up) as server:
        http = client(server.url)
        assert await body_of(http) == (200, b"ok")
        await asyncio.sleep(0.05)
        assert await body_of(http) == (200, b"ok")
        http.close()
        assert server.connections == 2 and len(server.requests) == 2


async def test_a_request_on_a_connection_closed_meanwhile_is_sent_again_on_a_new_one() -> None:
    answered: set[asyncio.StreamWriter] = set()

    async def once_per_connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        if writer in answered:  # the server's idle timeout raced the request: no answer
            writer.transport.abort()
            return
        answered.add(writer)
        writer.write(OK_HEAD + b"content-length: 2\r\n\r\nok")
        await writer.drain()

    async with RawServer(once_per_connection) as server:
        http = client(server.url)
        assert await body_of(http) == (200, b"ok")
        assert await body_of(http) == (200, b"ok")
        http.close()
        assert server.connections == 2 and len(server.requests) == 3


async def test_an_informational_answer_is_skipped() -> None:
    async def continue_first(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)  # a read of its own
        writer.write(OK_HEAD + b"content-length: 3\r\n\r\nyes")
        await writer.drain()

    async with RawServer(continue_first) as server:
        http = client(server.url)
        assert await body_of(http) == (200, b"yes")
        http.close()


async def test_an_error_status_is_read_with_its_body() -> None:
    async def rate_limited(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 429 Too Many Requests\r\ncontent-length: 4\r\n\r\nslow")
        await writer.drain()

    async with RawServer(rate_limited) as server:
        http = client(server.url)
        assert await body_of(http) == (429, b"slow")
        assert await body_of(http) == (429, b"slow")
        http.close()
        assert server.connections == 1


async def test_a_connection_lost_mid_answer_keeps_what_came_then_fails() -> None:
    async def break_off(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n")
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.transport.abort()

    async with RawServer(break_off) as server:
        http = client(server.url)
        response = await http.post(b"{}")
        assert await response.next_block() == b"first"
        with pytest.raises(UpstreamBroken, match="closed mid-answer"):
            await response.next_block()
        response.release()
        http.close()


async def test_bytes_that_are_not_http_fail_clearly() -> None:
    async def garbage(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
        await writer.drain()

    async with RawServer(garbage) as server:
        http = client(server.url)
        with pytest.raises(UpstreamBroken, match="not valid HTTP"):
            await http.post(b"{}")
        http.close()


async def test_silence_past_the_read_timeout_fails() -> None:
    async def headers_then_silence(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        writer.write(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(5)

    async with RawServer(headers_then_silence) as server:
        http = client(server.url, read_timeout=0.3)
        response = await http.post(b"{}")
        started = time.monotonic()
        with pytest.raises(UpstreamTimeout, match="no answer for 0.3s"):
            await response.next_block()
        assert 0.25 < time.monotonic() - started < 2
        response.release()
        http.close()


async def test_a_slow_steady_answer_and_a_slow_caller_do_not_time_out() -> None:
    async def drip(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n")
        for _ in range(8):  # 0.8 s in all, never 0.3 s without a byte
            await asyncio.sleep(0.1)
            writer.write(b"1\r\nx\r\n")
            await writer.drain()
        writer.write(b"0\r\n\r\n")

    async with RawServer(drip) as server:
        http = client(server.url, read_timeout=0.3)
        assert await body_of(http) == (200, b"x" * 8)
        http.close()

    async def pause(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(OK_HEAD + b"transfer-encoding: chunked\r\n\r\n1\r\na\r\n")
        await writer.drain()
        await asyncio.sleep(0.6)
        writer.write(b"1\r\nb\r\n0\r\n\r\n")
        await writer.drain()

    async with RawServer(pause) as server:
        http = client(server.url, read_timeout=0.3)
        response = await http.post(b"{}")
        assert await response.next_block() == b"a"
        await asyncio.sleep(0.5)  # the caller is busy: the upstream's silence is not counted
        assert await response.read(100) == b"b"  # it waits 0.1 s for this
        response.release()
        http.close()


async def test_a_caller_that_does_not_read_stops_the_upstream() -> None:
    total = 64 << 20
    written = 0

    async def flood(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal written
        writer.write(OK_HEAD + b"content-length: %d\r\n\r\n" % total)
        piece = b"x" * (1 << 16)
        while written < total:
            writer.write(piece)
            await writer.drain()
            written += len(piece)

    async with RawServer(flood) as server:
        http = client(server.url)
        response = await http.post(b"{}")
        await asyncio.sleep(0.5)
        assert written < total // 4  # kernel buffers and our READ_HIGH_WATER, then it waits
        received = 0
        while (block := await response.next_block()) is not None:
            assert len(block) <= READ_HIGH_WATER + (1 << 20)
            received += len(block)
        assert received == total
        response.release()
        http.close()


async def test_nobody_listening_is_unreachable() -> None:
    http = client(yarl.URL(f"http://127.0.0.1:{free_port()}/v1/chat/completions"))
    with pytest.raises(UpstreamUnreachable, match="cannot connect to 127.0.0.1"):
        await http.post(b"{}")


def test_the_request_head_names_host_and_port_and_refuses_line_breaks() -> None:
    head = request_head(yarl.URL("https://api.example.com/v1/chat/completions?x=1"), {"a": "b"})
    assert head == b"POST /v1/chat/completions?x=1 HTTP/1.1\r\nHost: api.example.com\r\na: b\r\n"
    head = request_head(yarl.URL("http://[::1]:8080/c"), {})
    assert b"Host: [::1]:8080\r\n" in head
    with pytest.raises(ValueError, match="line break"):
        request_head(yarl.URL("http://h/c"), {"authorization": "Bearer k\r\nx-evil: 1"})


def test_only_http_urls_are_accepted() -> None:
    with pytest.raises(ValueError, match="not an http"):
        client(yarl.URL("ftp://h/c"))


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost, made with the openssl command."""
    if shutil.which("openssl") is None:
        pytest.skip("the openssl command is not installed: no certificate for the TLS tests")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2"]
        + ["-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost"]
        + ["-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    return cert, key


async def test_https_verifies_the_certificate_and_reads_the_answer(
    certificate: tuple[Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    cert, key = certificate
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(cert, key)
    async with RawServer(answer_chunked, tls) as server:
        url = yarl.URL(f"https://localhost:{server.port}/v1/chat/completions")
        with pytest.raises(UpstreamUnreachable, match="CERTIFICATE_VERIFY_FAILED"):
            await client(url).post(b"{}")  # not signed by a CA this machine trusts
        monkeypatch.setenv("SSL_CERT_FILE", str(cert))  # now it is
        http = client(url)
        assert await body_of(http) == (200, b"data: a\n\nb")
        assert await body_of(http) == (200, b"data: a\n\nb")
        http.close()


def test_proxy_for_follows_the_configured_key_then_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def environ(**variables: str) -> None:
        for name in list(os.environ):
            if name.lower().endswith("_proxy"):
                monkeypatch.delenv(name)
        for name, value in variables.items():
            monkeypatch.setenv(name, value)

    url = yarl.URL("https://api.example.com/v1/chat/completions")
    environ(HTTPS_PROXY="http://egress:3128", NO_PROXY="internal.example.com")
    assert proxy_for(url, None) == yarl.URL("http://egress:3128")
    assert proxy_for(url, "http://own:8080") == yarl.URL("http://own:8080")
    assert proxy_for(yarl.URL("https://internal.example.com/v1"), None) is None
    assert proxy_for(yarl.URL("http://plain.example.com/v1"), None) is None  # no HTTP_PROXY
    environ(https_proxy="egress:3128")
    assert proxy_for(url, None) == yarl.URL("http://egress:3128")
    environ(HTTPS_PROXY="socks5://egress:1080")
    with pytest.raises(ValueError, match="http://"):
        proxy_for(url, None)


def test_through_a_proxy_plain_http_names_the_whole_url_and_authenticates() -> None:
    head = request_head(
        yarl.URL("http://api.example.com:8000/v1/chat/completions"),
        {"a": "b"},
        yarl.URL("http://user:pw@egress:3128"),
    )
    assert head.startswith(b"POST http://api.example.com:8000/v1/chat/completions HTTP/1.1\r\n")
    assert b"Proxy-Authorization: Basic dXNlcjpwdw==\r\n" in head
