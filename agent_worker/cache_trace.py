"""`diagnostics.cacheTrace` (OpenClaw's key): one log line per model call that says whether
its prompt repeats the session's previous call's prefix, and where it first differs, so that a
user can see why a turn missed the provider's prompt cache.

The prompt is read in parts, in the order providers cache it: the tools, then each message
(the system prompt first). Each part is hashed; the line names the first part that differs
from the previous call of the same session on this worker, and a fingerprint of the whole
prefix (equal fingerprints: byte-stable prompts). Off by default: it hashes every prompt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import OrderedDict

import orjson

from agent_worker.domain import ChatMessage
from agent_worker.providers.base import ProviderRequest
from services.logging import fingerprint

log = logging.getLogger("clawgate.worker.cache")
# Sessions whose last prompt is remembered; the least recently traced is forgotten first.
SESSIONS_KEPT = 1000

Part = tuple[str, bytes]  # its name in the line, its digest


def _digest(value: object) -> bytes:
    return hashlib.blake2b(orjson.dumps(value), digest_size=16).digest()


def _message(message: ChatMessage) -> object:
    calls = [(call.id, call.name, call.arguments) for call in message.tool_calls]
    images = [(image.media_type, len(image.data)) for image in message.images]
    return [message.role, message.text, calls, message.tool_call_id, message.name, images]


def prompt_parts(request: ProviderRequest) -> list[Part]:
    tools = [(tool.name, tool.description, tool.parameters_json) for tool in request.tools]
    parts: list[Part] = [("tools", _digest(tools))]
    for index, message in enumerate(request.messages):
        name = "system prompt" if message.role == "system" else f"message {index}"
        parts.append((name, _digest(_message(message))))
    return parts


class CacheTrace:
    def __init__(self) -> None:
        self._last: OrderedDict[str, list[Part]] = OrderedDict()
        self._lock = threading.Lock()  # turns trace on several threads at once

    def observe(self, session_key: str, request: ProviderRequest) -> None:
        """Logs the call's line (it may run on a thread: the prompt is hashed whole)."""
        parts = prompt_parts(request)
        with self._lock:
            previous = self._last.pop(session_key, None)
            self._last[session_key] = parts
            if len(self._last) > SESSIONS_KEPT:
                self._last.popitem(last=False)
        whole = hashlib.blake2b(b"".join(digest for _, digest in parts), digest_size=8)
        if previous is None:
            verdict = "first call of the session on this worker"
        else:
            same = next(
                (
                    i
                    for i, (mine, theirs) in enumerate(zip(parts, previous, strict=False))
                    if mine != theirs
                ),
                min(len(parts), len(previous)),
            )
            if same == len(previous):
                verdict = "repeats the previous call's prompt whole"
            elif same == len(parts):
                verdict = "is a part of the previous call's prompt"
            else:
                verdict = f"differs from the previous call from its {parts[same][0]} on"
        log.info(
            "cache trace: session=%s model=%s retention=%s parts=%d prefix=%s %s",
            fingerprint(session_key),
            request.model,
            request.cache_retention or "unset",
            len(parts),
            whole.hexdigest(),
            verdict,
        )
