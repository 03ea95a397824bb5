"""An OpenAI-compatible stand-in with a hard context window, for compaction tests.

It counts a prompt's tokens its own way (words and punctuation marks, plus 4 a message: not the
worker's estimate) and refuses a request whose prompt plus `max_tokens` exceeds its window with
OpenAI's 400 `context_length_exceeded` error, as OpenAI and vLLM do. Otherwise it streams an
answer with usage:
- asked to summarise (the worker's summary instructions as system message), it keeps each line
  holding "FACT" of what it read (the previous summary included), like a careful summariser;
- asked "which facts?", it names every "FACT …" line anywhere in its prompt;
- else it answers "noted: " and the start of the last message.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from agent_worker.compaction import SUMMARY_INSTRUCTIONS
from devkit.upstream import UpstreamStandIn, read_json

_TOKEN = re.compile(r"\w+|[^\w\s]")
_FACT = re.compile(r"FACT[^\n.]*")


def tokens_of(text: str) -> int:
    return len(_TOKEN.findall(text))


def content_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


class WindowedUpstream(UpstreamStandIn):
    def __init__(self, window: int) -> None:
        super().__init__()
        self.window = window
        self.prompts: list[int] = []  # every request's prompt tokens, as counted here
        self.overflows = 0  # requests refused as too long
        self.summaries = 0  # summary requests answered

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        request = await read_json(receive)
        self.requests.append(request)
        messages = request["messages"]
        texts = [content_text(message.get("content")) for message in messages]
        for message in messages:
            texts += [call["function"]["arguments"] for call in message.get("tool_calls") or ()]
        prompt_tokens = sum(map(tokens_of, texts)) + 4 * len(messages)
        if request.get("tools"):
            prompt_tokens += tokens_of(orjson.dumps(request["tools"]).decode())
        self.prompts.append(prompt_tokens)
        requested = prompt_tokens + (request.get("max_tokens") or 0)
        if requested > self.window:
            self.overflows += 1
            error = {
                "error": {
                    "message": f"This model's maximum context length is {self.window} tokens."
                    f" However, you requested {requested} tokens ({prompt_tokens} in the"
                    " messages). Please reduce the length of the messages.",
                    "type": "invalid_request_error",
                    "param": "messages",
                    "code": "context_length_exceeded",
                }
            }
            await _send(send, 400, "application/json", orjson.dumps(error))
            return
        answer = self._reply(messages, texts)
        limit = request.get("max_tokens")
        words = answer.split(" ")
        if limit is not None and len(words) > limit:
            words = words[:limit]
        chunks = [_chunk({"content": word + " "}) for word in words]
        chunks.append(_chunk({}, "stop"))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        chunks.append(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n")
        await _send(send, 200, "text/event-stream", b"".join(chunks) + b"data: [DONE]\n\n")

    def _reply(self, messages: list[dict[str, Any]], texts: list[str]) -> str:
        if messages[0]["role"] == "system" and texts[0] == SUMMARY_INSTRUCTIONS:
            self.summaries += 1
            facts = dict.fromkeys(_FACT.findall("\n".join(texts[1:])))
            return ". ".join(facts) or "Small talk, nothing to keep."
        last = texts[len(messages) - 1]
        if "which facts?" in last:
            return ". ".join(dict.fromkeys(_FACT.findall("\n".join(texts)))) or "none"
        return "noted: " + " ".join(last.split()[:12])


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish_reason}
    return (
        b"data: " + orjson.dumps({"object": "chat.completion.chunk", "choices": [choice]}) + b"\n\n"
    )


async def _send(send: Any, status: int, content_type: str, body: bytes) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
