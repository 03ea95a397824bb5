"""Threads for work whose cost grows with a request (parsing and converting a large body,
counting a large prompt), so that an event loop that carries everyone's streams only waits.

Small work runs in place: the hop to a thread and back costs more than it saves. The work runs
in the caller's context (its request id, its trace), as `asyncio.to_thread` does.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class OffLoop:
    """A process's threads for one kind of work."""

    def __init__(self, threads: int = 2, name: str = "off-loop") -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix=name)

    async def run(self, light: bool, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(*args, **kwargs)`: in place when `light`, else on one of the threads."""
        if light:
            return work(*args, **kwargs)
        context = contextvars.copy_context()
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, lambda: context.run(work, *args, **kwargs)
        )

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
