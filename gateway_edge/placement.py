"""Which worker a turn goes to: pure functions of the workers' state and the session key.

Turns of a named session go to the first usable worker in rendezvous order for its key, so every
edge picks the same worker without sharing state; fresh sessions go to the worker with the
fewest turns in flight.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection

from gateway_edge.worker import Worker


def rendezvous_weight(address: str, session_key: str) -> bytes:
    """A session goes to the usable worker with the highest weight for its key."""
    return hashlib.blake2b(f"{address}|{session_key}".encode(), digest_size=8).digest()


def candidates(workers: Collection[Worker], session_key: str, sticky: bool) -> list[Worker]:
    """Workers to try in order: usable ones first (all of them when none is)."""
    usable = [worker for worker in workers if worker.usable] or list(workers)
    usable.sort(key=lambda worker: rendezvous_weight(worker.address, session_key), reverse=True)
    if not sticky:
        usable.sort(key=lambda worker: worker.in_flight)  # stable: ties keep the hash order
    return usable
