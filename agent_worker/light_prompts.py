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

# A prompt is light while it has at most this many messages and this much text. Counted with a
# model's own tokenizer (a native call per text, about 0.5 us a character), 64 messages and
# 4 KiB take about a millisecond; estimated (a division per message) or serialised, 256
# messages and 64 KiB take about as long.
LIGHT_TO_TOKENIZE = (64, 4096)
LIGHT_TO_ESTIMATE = (256, 65_536)


def is_light(messages: Iterable[ChatMessage], tokenized: bool = False) -> bool:
    """Whether `messages` are few and short enough to work on in place (`tokenized`: counted by
    a tokenizer); stops reading early."""
    most_messages, most_characters = LIGHT_TO_TOKENIZE if tokenized else LIGHT_TO_ESTIMATE
    size = 0
    for count, message in enumerate(messages, start=1):
        size += len(message.text)
        for call in message.tool_calls:
            size += len(call.arguments)
        if size > most_characters or count > most_messages:
            return False
    return True
