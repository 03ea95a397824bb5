"""Where the workers are: `gateway.workers` targets resolved to addresses.

Targets are `host:port` or `dns:///host:port`; a host name is resolved to all of its addresses
(compose replicas, a Kubernetes headless service), and again every `workerResolveSeconds`.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Sequence

from services.network import is_static, join_address

log = logging.getLogger("clawgate.edge.workers")
Target = tuple[str, int]


def split_target(target: str) -> Target:
    """'dns:///agent-worker:50051' or 'agent-worker:50051' → ('agent-worker', 50051)."""
    host, _, port = target.removeprefix("dns:///").rpartition(":")
    return host.strip("[]"), int(port)


def needs_resolving(targets: Sequence[Target]) -> bool:
    return not all(is_static(host) for host, _ in targets)


async def addresses_of(targets: Sequence[Target]) -> set[str]:
    """Every address the targets name now; a name that does not resolve is logged and left out."""
    loop = asyncio.get_running_loop()
    found: set[str] = set()
    for host, port in targets:
        if is_static(host):
            found.add(join_address(host, port))
            continue
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as error:
            log.warning("cannot resolve workers at %s: %s", host, error)
            continue
        found.update(join_address(str(info[4][0]), port) for info in infos)
    return found
