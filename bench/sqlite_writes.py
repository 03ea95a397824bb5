"""The SQLite store alone under a steady stream of finished turns (about 3,300 a second, ten
every 3 ms, as the pair's worker sees under wrk): how long a turn waits for its write, and how
long checkpoints take. Checkpoints that hold turns show up in the tail.

    python -m bench.sqlite_writes [--seconds 6]
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from agent_worker.domain import ChatMessage
from agent_worker.sessions import sqlite_store, sqlite_writes

TURN = [ChatMessage("user", "hi"), ChatMessage("assistant", " ".join(f"w{i}" for i in range(16)))]


def waited_since(asked: float, waits: list[float]) -> Callable[[object], None]:
    return lambda _: waits.append(time.perf_counter() - asked)


async def run(seconds: float) -> None:
    checkpoints: list[float] = []
    checkpoint = sqlite_writes.checkpoint_wal

    def timed_checkpoint(connection: sqlite3.Connection) -> None:
        started = time.perf_counter()
        checkpoint(connection)
        checkpoints.append(time.perf_counter() - started)

    sqlite_writes.checkpoint_wal = timed_checkpoint  # the thread calls it through the module
    with tempfile.TemporaryDirectory() as tmp:
        store = sqlite_store.SqliteSessionStore(Path(tmp) / "s.db")
        await store.open()
        waits: list[float] = []
        turns = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            for _ in range(10):
                turns += 1
                written = store.append_turn(f"agent:main:openai:{turns:012d}", TURN)
                written.add_done_callback(waited_since(time.perf_counter(), waits))
            await asyncio.sleep(0.003)
        await asyncio.sleep(0.5)
        await store.close()
    waits.sort()
    print(
        f"sqlite writes: {turns:,} turns in {seconds:g} s; {len(checkpoints)} checkpoints,"
        f" p50 {statistics.median(checkpoints) * 1000:.1f} ms,"
        f" max {max(checkpoints) * 1000:.1f} ms;"
        f" a turn's wait for its write p99 {waits[int(len(waits) * 0.99)] * 1000:.2f} ms,"
        f" p99.9 {waits[int(len(waits) * 0.999)] * 1000:.2f} ms, max {waits[-1] * 1000:.1f} ms"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=6)
    asyncio.run(run(parser.parse_args().seconds))


if __name__ == "__main__":
    main()
