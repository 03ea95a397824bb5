"""The PostgreSQL session store alone: how many turns a second one worker's store gets through
(take the session's lease, read its history, write the turn, give the lease back), with how
many connections, and the database server's CPU per turn.

    python bench/store_turns.py [--url postgresql://…] [--seconds 10] [--concurrency 64]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import asyncpg

from agent_worker.domain import ChatMessage
from agent_worker.sessions.postgres_store import PostgresSessionStore
from devkit.processes import POSTGRES_URL

TURN = [ChatMessage("user", "hi"), ChatMessage("assistant", " ".join(["word"] * 16))]


def server_cpu_seconds() -> float:
    """CPU of every PostgreSQL process on this machine (the server runs here in the bench)."""
    total = 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as stat:
                fields = stat.read().rsplit(")", 1)
            with open(f"/proc/{entry}/comm") as comm:
                if comm.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        values = fields[1].split()
        total += (int(values[11]) + int(values[12])) / ticks
    return total


async def run(url: str, seconds: float, concurrency: int, pool_size: int) -> None:
    store = PostgresSessionStore(url, pool_size)
    await store.open()
    turns = 0
    deadline = time.monotonic() + seconds

    async def client() -> None:
        nonlocal turns
        session = f"bench:{uuid.uuid4().hex}"
        while time.monotonic() < deadline:
            async with store.session_lock(session, 30):
                await store.load(session, 100)
                await store.append_turn(session, TURN)
            turns += 1

    cpu_before, own_before = server_cpu_seconds(), time.process_time()
    started = time.monotonic()
    await asyncio.gather(*(client() for _ in range(concurrency)))
    took = time.monotonic() - started
    cpu, own = server_cpu_seconds() - cpu_before, time.process_time() - own_before
    connection = await asyncpg.connect(url)
    connections = await connection.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
    )
    await connection.close()
    await store.close()
    print(
        f"store turns: {turns / took:,.0f} turns/s ({concurrency} at once, poolSize {pool_size},"
        f" {connections - 1} connections); CPU per turn: PostgreSQL {cpu / turns * 1e6:,.0f} µs,"
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
