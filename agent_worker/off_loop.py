"""Work on a turn's prompt whose cost grows with the request (counting tokens, clipping,
summaries' input, digests): on threads of its own when the prompt is large, so that the event
loop, which carries every other turn's stream and the worker's health answers, only waits.

A small prompt is worked on in place: the hop to a thread and back costs more than counting a
few short messages (docs/performance.md). The embedded model's tokenizer is native code that
releases the GIL, so a 2 MB message counted on a thread leaves the loop free.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from agent_worker.domain import ChatMessage

P = ParamSpec("P")
T = TypeVar("T")
# A prompt is light while it has at most this many messages and this much text: counting it
# in place holds the loop for well under a millisecond.
LIGHT_MESSAGES = 256
LIGHT_CHARACTERS = 16_384


def is_light(messages: Iterable[ChatMessage], characters: int = LIGHT_CHARACTERS) -> bool:
    """Whether `messages` are few and short enough to work on in place; stops reading early."""
    size = 0
    for count, message in enumerate(messages, start=1):
        size += len(message.text)
        for call in message.tool_calls:
            size += len(call.arguments)
        if size > characters or count > LIGHT_MESSAGES:
            return False
    return True


class OffLoop:
    """The threads a worker's prompt work runs on (shared by its turns)."""

    def __init__(self, threads: int = 2) -> None:
        self._executor = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="prompt")

    async def run(self, light: bool, work: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`work(*args)`: in place when `light`, else on a prompt thread."""
        if light:
            return work(*args, **kwargs)
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: work(*args, **kwargs))

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
