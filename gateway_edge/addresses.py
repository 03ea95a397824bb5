"""Address helpers shared by auth and rate limiting."""

from __future__ import annotations

from services.addresses import is_loopback

__all__ = ["client_ip", "is_loopback"]


def client_ip(scope_client: tuple[str, int] | None) -> str:
    """The client's address: the peer's, or, when the peer is one of `gateway.trustedProxies`,
    what its X-Forwarded-For says (uvicorn rewrites the scope; nobody else is believed)."""
    return scope_client[0] if scope_client else ""
