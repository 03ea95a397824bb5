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
import threading
import time
from typing import Any

import orjson
import uvicorn

from agent_worker.compaction import SUMMARY_INSTRUCTIONS
from devkit.processes import free_port

_TOKEN = re.compile(r"\w+|[^\w\s]")
_FACT = re.compile(r"FACT[^\n.]*")


def tokens_of(text: str) -> int:
    return len(_TOKEN.findall(text))


def content_text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


class WindowedUpstream:
    def __init__(self, window: int) -> None:
        self.window = window
        self.port = free_port()
        self.prompts: list[int] = []  # every request's prompt tokens, as counted here
        self.overflows = 0  # requests refused as too long
        self.summaries = 0  # summary requests answered
        self.bodies: list[dict[str, Any]] = []  # every request body, in order
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="error",
            lifespan="off",
            interface="asgi3",
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def __enter__(self) -> WindowedUpstream:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("windowed upstream did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = orjson.loads(body)
        self.bodies.append(request)
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
        answer = self._answer(messages, texts)
        limit = request.get("max_tokens")
        words = answer.split(" ")
        if limit is not None and len(words) > limit:
            words = words[:limit]
        chunks = [_chunk({"content": word + " "}) for word in words]
        chunks.append(_chunk({}, "stop"))
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words)}
        chunks.append(b"data: " + orjson.dumps({"choices": [], "usage": usage}) + b"\n\n")
        await _send(send, 200, "text/event-stream", b"".join(chunks) + b"data: [DONE]\n\n")

    def _answer(self, messages: list[dict[str, Any]], texts: list[str]) -> str:
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
