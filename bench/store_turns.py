"""The PostgreSQL session store alone: how many turns a second one worker's store gets through
(take the session's lease, read its history, write the turn, give the lease back), with how
many connections, and the database server's CPU per turn.

    python -m bench.store_turns [--url postgresql://…] [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid

import asyncpg

from agent_worker.domain import ChatMessage
from agent_worker.sessions.postgres_store import PostgresSessionStore
from bench.harness import cpu_seconds
from devkit.processes import POSTGRES_URL

TURN = [ChatMessage("user", "hi"), ChatMessage("assistant", " ".join(["word"] * 16))]


class ServerCpu:
    """CPU of the server processes serving this database (the server runs on this machine),
    sampled twice a second: asyncpg replaces a connection after 50,000 queries, and a process
    that is gone can no longer be read."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._first: dict[int, float] = {}
        self._last: dict[int, float] = {}
        self.connections = 0

    async def sample(self, connection: asyncpg.Connection, started: bool) -> None:
        rows = await connection.fetch(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND pid <> pg_backend_pid() AND backend_type = 'client backend'"
        )
        self.connections = max(self.connections, len(rows))
        for (pid,) in rows:
            try:
                seconds = cpu_seconds(pid)
            except OSError:  # ended since the query
                continue
            self._first.setdefault(pid, seconds if not started else 0.0)
            self._last[pid] = seconds

    async def watch(self, until: asyncio.Event) -> None:
        connection = await asyncpg.connect(self._url)
        try:
            await self.sample(connection, started=False)
            while not until.is_set():
                await asyncio.sleep(0.5)
                await self.sample(connection, started=True)
        finally:
            await connection.close()

    @property
    def seconds(self) -> float:
        return sum(self._last[pid] - first for pid, first in self._first.items())


async def run(url: str, seconds: float, concurrency: int, pool_size: int) -> None:
    store = PostgresSessionStore(url, pool_size)
    await store.open()
    turns = 0

    async def client(deadline: float) -> None:
        nonlocal turns
        session = f"bench:{uuid.uuid4().hex}"
        while time.monotonic() < deadline:
            async with store.session_lock(session, 30):
                await store.load(session, 100)
                await store.append_turn(session, TURN)
            turns += 1

    async def load(for_seconds: float) -> None:
        deadline = time.monotonic() + for_seconds
        await asyncio.gather(*(client(deadline) for _ in range(concurrency)))

    await load(1)  # the pool opens its connections
    server, done = ServerCpu(url), asyncio.Event()
    watching = asyncio.create_task(server.watch(done))
    await asyncio.sleep(0.1)
    turns = 0
    own_before, started = time.process_time(), time.monotonic()
    await load(seconds)
    took, own = time.monotonic() - started, time.process_time() - own_before
    done.set()
    await watching
    cpu, connections = server.seconds, server.connections
    await store.close()
    print(
        f"store turns: {turns / took:,.0f} turns/s ({concurrency} at once, poolSize {pool_size},"
        f" {connections} connections); CPU per turn: PostgreSQL {cpu / turns * 1e6:,.0f} µs,"
        f" the store's process {own / turns * 1e6:,.0f} µs"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=POSTGRES_URL)
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--pool-size", type=int, default=4)
    args = parser.parse_args()
    asyncio.run(run(args.url, args.seconds, args.concurrency, args.pool_size))


if __name__ == "__main__":
    main()
