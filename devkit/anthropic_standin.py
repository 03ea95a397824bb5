"""A stand-in for Anthropic's Messages API (`POST /v1/messages`), written to its published
protocol, for tests and the benchmark: no real Anthropic server can run here.

It refuses what Anthropic refuses (400 `invalid_request_error` naming the rule): no
`anthropic-version` header, no key (401), no `max_tokens`, a `system` role among the messages,
a first message that is not the user's, empty text blocks, a `tool_result` that answers no
`tool_use` of the message before it, a `tool_use` left without its result, tool results after
other blocks, a temperature above 1, thinking budgets out of range, temperature with thinking,
a tool loop with thinking on whose assistant turn does not start with the signed thinking block
it was given. Every body is also checked against the `anthropic` SDK's request types.

The requested `model` steers the answer:
- `status-<code>`: that HTTP error, Anthropic's error body (`ratelimited-<s>`: 429 with
  `retry-after: <s>`; `overloaded`: 529, `overloaded-<n>…`: 529 for its first n requests).
- `words-<n>`: n text deltas `w0 w1 …` (the benchmark's 16); `long`: 50 words, cut at
  `max_tokens` with stop reason `max_tokens`.
- `tools…`: "Let me check." and a `tool_use` of the first offered tool (input in two
  `input_json_delta` pieces); once its result came, "tool said: <result>".
- `thinking…`: a signed thinking block first (then as above), its text never meant for users.
- `break-after-1…`: one word, then an `error` event (`overloaded_error`) mid-stream.
- `refusal`: stop reason `refusal`.
- anything else: says back the system prompt, the last user text and each image it got
  (`system=… user=… image=<media type>:<bytes>`).

Input tokens are counted and cached as Anthropic documents (devkit/anthropic_cache.py), and
reported as its `message_start` does: `input_tokens`, `cache_read_input_tokens`,
`cache_creation_input_tokens`.
"""

from __future__ import annotations

import asyncio
import base64
import re
from typing import Any

import orjson

from devkit.anthropic_cache import PromptCache
from devkit.anthropic_rules import Refused, blocks_of, check_body, signature_of
from devkit.upstream import ThreadedServer, read_json

API_KEY = "sk-ant-standin"
_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    413: "request_too_large",
    429: "rate_limit_error",
    500: "api_error",
    529: "overloaded_error",
}


def _event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, **data}))


class AnthropicStandIn(ThreadedServer):
    path_prefix = ""  # the provider's baseUrl is the host: it adds /v1/messages

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.refusals: list[str] = []
        self._counts: dict[str, int] = {}
        self.cache = PromptCache()
        self.usages: list[dict[str, int]] = []  # message_start's input counts, request by request
        super().__init__()

    def models_asked(self) -> list[str]:
        return [str(request.get("model")) for request in self.requests]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            if scope["method"] != "POST" or scope["path"] != "/v1/messages":
                raise Refused(404, f"Not found: {scope['method']} {scope['path']}")
            key = headers.get("x-api-key") or headers.get("authorization", "").removeprefix(
                "Bearer "
            )
            if key != API_KEY:
                raise Refused(401, "invalid x-api-key")
            if "anthropic-version" not in headers:
                raise Refused(400, "anthropic-version: header is required")
            try:
                body = await read_json(receive)
            except orjson.JSONDecodeError:
                raise Refused(400, "the body is not JSON") from None
            self.requests.append(body)
            self.headers.append(headers)
            check_body(body)
            model = str(body["model"])
            count = self._counts[model] = self._counts.get(model, 0) + 1
            self._steer_errors(model, count)
        except Refused as refused:
            if refused.status == 400:
                self.refusals.append(refused.message)
            await self._error(send, refused)
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        for frame in self._frames(body, model):
            if frame is None:  # a pause: these arrive in separate reads, as a model writes
                await asyncio.sleep(0.002)
                continue
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    def _steer_errors(model: str, count: int) -> None:
        if model.startswith("status-"):
            raise Refused(int(model.split("-")[1]), f"stand-in says {model}")
        if found := re.match(r"ratelimited-(\d+)", model):
            raise Refused(429, "rate limited", [(b"retry-after", found.group(1).encode())])
        if model == "overloaded":
            raise Refused(529, "Overloaded")
        if (found := re.match(r"overloaded-(\d+)", model)) and count <= int(found.group(1)):
            raise Refused(529, "Overloaded")

    @staticmethod
    async def _error(send: Any, refused: Refused) -> None:
        kind = _ERROR_TYPES.get(refused.status, "api_error")
        body = {"type": "error", "error": {"type": kind, "message": refused.message}}
        headers = [(b"content-type", b"application/json"), *refused.headers]
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps(body)})

    def _frames(self, body: dict[str, Any], model: str) -> list[bytes | None]:
        messages = body["messages"]
        last = blocks_of(messages[-1])
        uncached, read, written = self.cache.account(body)
        usage = {
            "input_tokens": uncached,
            "cache_read_input_tokens": read,
            "cache_creation_input_tokens": written,
        }
        self.usages.append(usage)
        frames: list[bytes | None] = [
            _event(
                "message_start",
                {
                    "message": {
                        "id": "msg_standin",
                        "type": "message",
                        "role": "assistant",
                        "content": [],
                        "model": model,
                        "stop_reason": None,
                        "stop_sequence": None,
                        "usage": {**usage, "output_tokens": 1},
                    }
                },
            ),
            _event("ping", {}),
        ]
        index = 0
        if model.startswith("thinking"):
            thought = f"The user wants {model}; think first."
            frames += [
                _event(
                    "content_block_start",
                    {
                        "index": 0,
                        "content_block": {"type": "thinking", "thinking": "", "signature": ""},
                    },
                ),
                _event(
                    "content_block_delta",
                    {"index": 0, "delta": {"type": "thinking_delta", "thinking": thought}},
                ),
                _event(
                    "content_block_delta",
                    {
                        "index": 0,
                        "delta": {"type": "signature_delta", "signature": signature_of(thought)},
                    },
                ),
                _event("content_block_stop", {"index": 0}),
            ]
            index = 1
        results = [block for block in last if block.get("type") == "tool_result"]
        words: list[str]
        stop = "end_turn"
        if results:
            words = [f"tool said: {result['content']}" for result in results]
        elif "tools" in model and body.get("tools"):
            return frames + self._tool_call(body, index)
        elif found := re.match(r"words-(\d+)", model):
            words = [f"w{i} " for i in range(int(found.group(1)))]
        elif model == "long":
            words = [f"w{i} " for i in range(50)]
        elif model.startswith("break-after-"):
            words = ["one ", "two ", "three"]
        else:
            words = [self._said_back(body, last)]
        if len(words) > body["max_tokens"]:
            words, stop = words[: body["max_tokens"]], "max_tokens"
        if model == "refusal":
            stop = "refusal"
        frames.append(
            _event(
                "content_block_start",
                {"index": index, "content_block": {"type": "text", "text": ""}},
            )
        )
        for number, word in enumerate(words):
            if model.startswith("break-after-") and number == 1:
                failure = {"type": "overloaded_error", "message": "Overloaded"}
                return [*frames, _event("error", {"error": failure})]
            delta = {"type": "text_delta", "text": word}
            frames += [_event("content_block_delta", {"index": index, "delta": delta}), None]
        frames += [
            _event("content_block_stop", {"index": index}),
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": stop, "stop_sequence": None},
                    "usage": {"output_tokens": len(words)},
                },
            ),
            _event("message_stop", {}),
        ]
        return frames

    @staticmethod
    def _said_back(body: dict[str, Any], last: list[dict[str, Any]]) -> str:
        system = body.get("system") or ""
        if isinstance(system, list):
            system = " ".join(block["text"] for block in system)
        text = " ".join(block["text"] for block in last if block.get("type") == "text")
        images = [
            f"image={block['source']['media_type']}:"
            f"{len(base64.b64decode(block['source']['data']))}"
            for block in last
            if block.get("type") == "image"
        ]
        return " ".join([f"system={system}", f"user={text}", *images])

    @staticmethod
    def _tool_call(body: dict[str, Any], index: int) -> list[bytes | None]:
        name = body["tools"][0]["name"]
        start = {"type": "tool_use", "id": "toolu_standin_0", "name": name, "input": {}}
        text = {"type": "text", "text": ""}
        delta = {"type": "text_delta", "text": "Let me check."}
        return [
            _event("content_block_start", {"index": index, "content_block": text}),
            _event("content_block_delta", {"index": index, "delta": delta}),
            _event("content_block_stop", {"index": index}),
            _event("content_block_start", {"index": index + 1, "content_block": start}),
            _event(
                "content_block_delta",
                {"index": index + 1, "delta": {"type": "input_json_delta", "partial_json": ""}},
            ),
            None,
            _event(
                "content_block_delta",
                {
                    "index": index + 1,
                    "delta": {"type": "input_json_delta", "partial_json": '{"city": '},
                },
            ),
            None,
            _event(
                "content_block_delta",
                {
                    "index": index + 1,
                    "delta": {"type": "input_json_delta", "partial_json": '"Paris"}'},
                },
            ),
            _event("content_block_stop", {"index": index + 1}),
            _event(
                "message_delta",
                {
                    "delta": {"stop_reason": "tool_use", "stop_sequence": None},
                    "usage": {"output_tokens": 9},
                },
            ),
            _event("message_stop", {}),
        ]
