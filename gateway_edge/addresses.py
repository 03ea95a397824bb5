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
    """The peer's address as the server saw it (proxies' forwarding headers are not trusted)."""
    return scope_client[0] if scope_client else ""
