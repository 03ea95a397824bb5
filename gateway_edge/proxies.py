"""`gateway.trustedProxies`: the reverse proxies whose forwarding headers are believed.

The edge reads X-Forwarded-For itself instead of leaving it to uvicorn: uvicorn replaces the
peer's address with the forwarded one, and trusted-proxy auth needs both (the peer to know the
request came through the proxy, the client for the failed-auth lockout and the logs).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
_LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))


class TrustedProxies:
    def __init__(self, entries: Sequence[str]) -> None:
        """`entries` as the config checked them (addresses or networks)."""
        self._networks: tuple[Network, ...] = tuple(
            ipaddress.ip_network(entry.strip().strip("[]"), strict=False) for entry in entries
        )

    def __bool__(self) -> bool:
        return bool(self._networks)

    @property
    def covers_loopback(self) -> bool:
        """Whether a process on this host could be taken for a trusted proxy."""
        return any(
            network.version == loopback.version and network.overlaps(loopback)  # type: ignore[arg-type]
            for network in self._networks
            for loopback in _LOOPBACK
        )

    def trusts(self, host: str) -> bool:
        if not self._networks:
            return False
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    def client_of(self, peer: tuple[str, int] | None, forwarded_for: bytes | None) -> str:
        """The client's address: the peer's, or, behind trusted proxies, the nearest hop of
        X-Forwarded-For that is not one of them (hops further left could be made up)."""
        if peer is None:
            return ""
        host = peer[0]
        if forwarded_for is None or not self.trusts(host):
            return host
        hops = [hop.strip() for hop in forwarded_for.decode("latin-1").split(",")]
        for hop in reversed(hops):
            if hop and not self.trusts(hop):
                return hop
        return hops[0] or host


NO_PROXIES = TrustedProxies(())
