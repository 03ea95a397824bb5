"""Recognises a provider's "the prompt is longer than the window" error, whatever its dialect,
and the window it names.

The forms seen: OpenAI and vLLM ("This model's maximum context length is 4096 tokens…", code
`context_length_exceeded`), llama.cpp's server (type `exceed_context_size_error`, "…exceeds the
available context size (2048 tokens)…", `n_ctx`), Ollama ("…exceeds the context length…"),
Anthropic ("prompt is too long: 210000 tokens > 200000 maximum") and llama-cpp-python
("Requested tokens (2100) exceed context window of 2048").
"""

from __future__ import annotations

import re

from agent_worker.errors import ContextOverflowError

_OVERFLOW = re.compile(
    r"context_length_exceeded|exceed_context_size|maximum context length|prompt is too long"
    r"|exceeds? (?:the )?(?:available )?context (?:window|size|length)"
    r"|context (?:window|length) exceeded|input exceeds the maximum number of tokens"
    r"|too many tokens",
    re.IGNORECASE,
)
_WINDOW = (
    re.compile(r"maximum context length is (\d+)", re.IGNORECASE),
    re.compile(r"context window of (\d+)", re.IGNORECASE),
    re.compile(r"context size \((\d+) tokens?\)", re.IGNORECASE),
    re.compile(r'"n_ctx"\s*:\s*(\d+)'),
    re.compile(r"> ?(\d+) maximum", re.IGNORECASE),
)


def overflow_error(text: str, message: str) -> ContextOverflowError | None:
    """The overflow error for a provider's error `text` (its body or exception text), or None
    when it is some other error; `message` is what a client reads if the retry fails too."""
    if not _OVERFLOW.search(text):
        return None
    window = None
    for pattern in _WINDOW:
        if found := pattern.search(text):
            window = int(found.group(1))
            break
    return ContextOverflowError(message, window)
