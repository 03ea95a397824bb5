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


def split_listen(listen: str) -> tuple[str, int]:
    """'0.0.0.0:50051' → ('0.0.0.0', 50051); '[::1]:50051' → ('::1', 50051)."""
    host, _, port = listen.rpartition(":")
    return host.strip("[]"), int(port)


def is_static(host: str) -> bool:
    """Whether the host needs no name resolution (an IP address, or localhost)."""
    if host == "localhost":
        return True
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
