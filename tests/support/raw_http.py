"""Sends hand-made HTTP/1.1 requests, for headers that well-behaved clients refuse to send."""

from __future__ import annotations

import socket


def raw_post(
    base_url: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> tuple[int, bytes]:
    host, port = base_url.removeprefix("http://").split(":")
    head = [
        b"POST " + path.encode() + b" HTTP/1.1",
        b"Host: " + host.encode(),
        b"Connection: close",
        b"Content-Length: " + str(len(body)).encode(),
    ]
    head += [name + b": " + value for name, value in headers]
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"\r\n".join(head) + b"\r\n\r\n" + body)
        response = b""
        while chunk := sock.recv(65536):
            response += chunk
    status_line, _, rest = response.partition(b"\r\n")
    _, _, payload = rest.partition(b"\r\n\r\n")
    return int(status_line.split()[1]), payload
