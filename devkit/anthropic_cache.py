"""Anthropic's prompt caching as its documentation describes it, for the stand-in.

The prompt is read in Anthropic's order (tools, system, messages), block by block. A block
marked `cache_control` is a breakpoint: the prefix up to and including it is written to the
cache (when it holds at least MIN_CACHEABLE_TOKENS), for five minutes or, with `ttl: "1h"`, an
hour. A later request reads the longest cached prefix it repeats byte for byte, found by looking
back at most LOOK_BACK_BLOCKS blocks from each of its breakpoints; a read renews the entry. The
markers themselves are not part of the prefix. Tokens are counted as about four characters
each, as the stand-in has no tokenizer of Anthropic's.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from typing import Any

import orjson

MIN_CACHEABLE_TOKENS = 1024
LOOK_BACK_BLOCKS = 20
LIFETIMES = {"5m": 300.0, "1h": 3600.0}


def prompt_blocks(body: dict[str, Any]) -> list[dict[str, Any]]:
    """The prompt's blocks in the order Anthropic caches them."""
    blocks = list(body.get("tools") or ())
    system = body.get("system")
    if isinstance(system, str):
        blocks.append({"type": "text", "text": system})
    elif system:
        blocks += system
    for message in body["messages"]:
        content = message["content"]
        if isinstance(content, str):
            content = [{"type": "text", "text": content}]
        blocks += [{**block, "role": message["role"]} for block in content]
    return blocks


def without_markers(value: Any) -> Any:
    """`value` with every `cache_control` left out: the markers are not part of a prefix."""
    if isinstance(value, dict):
        return {k: without_markers(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [without_markers(item) for item in value]
    return value


def prefix_bytes(body: dict[str, Any], messages: int) -> bytes:
    """What a provider caches of a request body (Anthropic's or OpenAI's), in its order, up to
    `messages` messages: the tools, the system prompt (Anthropic's is apart), the messages."""
    parts = [body.get("tools"), body.get("system"), body["messages"][:messages]]
    return orjson.dumps(without_markers(parts))


def _unmarked(block: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in block.items() if k != "cache_control"})


def _lifetime(breakpoint: dict[str, Any]) -> float:
    return LIFETIMES[breakpoint["cache_control"].get("ttl", "5m")]


def tokens_of(block: dict[str, Any]) -> int:
    return len(_unmarked(block)) // 4 + 1


class PromptCache:
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._entries: dict[bytes, tuple[float, float]] = {}  # prefix: (expires, lifetime)

    def account(self, body: dict[str, Any]) -> tuple[int, int, int]:
        """The request's input tokens as Anthropic reports them: (read neither from nor into
        the cache, read from it, written to it)."""
        blocks = prompt_blocks(body)
        now = self._clock()
        digest = hashlib.sha256(str(body.get("model")).encode())  # a cache per model
        prefixes: list[bytes] = []
        totals: list[int] = []
        total = 0
        for block in blocks:
            digest.update(_unmarked(block))
            prefixes.append(digest.copy().digest())
            total += tokens_of(block)
            totals.append(total)
        breakpoints = [i for i, block in enumerate(blocks) if "cache_control" in block]
        read_to = 0  # blocks read from the cache
        for point in breakpoints:
            for index in range(point, max(point - LOOK_BACK_BLOCKS, -1), -1):
                entry = self._entries.get(prefixes[index])
                if entry is not None and entry[0] > now:
                    # Renewed, for as long as the breakpoint that found it asks.
                    lifetime = max(entry[1], _lifetime(blocks[point]))
                    self._entries[prefixes[index]] = (now + lifetime, lifetime)
                    read_to = max(read_to, index + 1)
                    break
        written_to = read_to
        for point in breakpoints:
            if point + 1 > read_to and totals[point] >= MIN_CACHEABLE_TOKENS:
                lifetime = _lifetime(blocks[point])
                self._entries[prefixes[point]] = (now + lifetime, lifetime)
                written_to = max(written_to, point + 1)
        read = totals[read_to - 1] if read_to else 0
        written = (totals[written_to - 1] if written_to else 0) - read
        return total - read - written, read, written
