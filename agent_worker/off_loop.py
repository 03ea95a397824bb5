"""Which prompts are light enough to count and clip in place, on the worker's event loop.

Work on a turn's prompt whose cost grows with the request (counting tokens, clipping, the
summary's input, digests) runs on the prompt threads (`services.off_loop.OffLoop`) when the
prompt is large, so that the loop, which carries every other turn's stream and the worker's
health answers, only waits. The embedded model's tokenizer is native code that releases the
GIL: a 2 MB message counted on a thread leaves the loop free.
"""

from __future__ import annotations

from collections.abc import Iterable

from agent_worker.domain import ChatMessage

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
