"""The bound on a turn's provider waits (`turnTimeoutMs`)."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable
from typing import TypeVar

from agent_worker.errors import TurnTimeoutError

T = TypeVar("T")


class ProviderDeadline:
    """Times only the provider's waits: a consumer paused at `yield` is never cancelled by it.

    One timer per turn rather than a timeout scope per event: the timer cancels the turn's task
    only while it waits for the provider, and a wait that starts after the deadline fails at once.
    """

    def __init__(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._seconds = seconds
        self._task = asyncio.current_task()
        self._handle = loop.call_at(loop.time() + seconds, self._expire)
        self._expired = False
        self._waiting = False
        self._fired = False

    def _expire(self) -> None:
        self._expired = True
        if self._waiting and self._task is not None:
            self._fired = True
            self._task.cancel()

    def _timeout(self) -> TurnTimeoutError:
        return TurnTimeoutError(f"the turn took longer than {self._seconds:g}s (turnTimeoutMs)")

    async def wait_for(self, step: Awaitable[T]) -> T:
        if self._expired:
            if inspect.iscoroutine(step):
                step.close()
            raise self._timeout()
        self._waiting = True
        try:
            return await step
        except asyncio.CancelledError:
            if not self._fired or self._task is None or self._task.uncancel() > 0:
                raise
            raise self._timeout() from None
        finally:
            self._waiting = False

    def cancel(self) -> None:
        self._handle.cancel()
