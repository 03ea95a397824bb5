"""Address helpers shared by auth and rate limiting."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_ip(scope_client: tuple[str, int] | None) -> str:
    """The client's address: the peer's, or, when the peer is a reverse proxy on 127.0.0.1,
    what its X-Forwarded-For says (uvicorn's default; no other peer is trusted with it)."""
    return scope_client[0] if scope_client else ""
