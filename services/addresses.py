"""Address helpers both processes use."""

from __future__ import annotations

import ipaddress


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_host(listen: str) -> str:
    """'0.0.0.0:50051' → '0.0.0.0'; '[::1]:50051' → '::1'."""
    return listen.rpartition(":")[0].strip("[]")
