"""A stand-in for OpenAI's Responses API (`POST /v1/responses`, streamed), written to its
published event stream, for tests: no real OpenAI server can run here.

It refuses what OpenAI refuses (devkit/responses_rules.py: the `openai` SDK's request types, a
missing key (401), a reasoning item without its encrypted content under `store: false` or with
content it did not seal, an orphan `function_call_output`, temperature on a reasoning model,
`max_output_tokens` below 16). Every event it streams is one of the SDK's `ResponseStreamEvent`
types (its tests check each).

The requested `model` steers the answer.
Keys: each known key is served, rate limited or refused as `keys` says.

- `status-<code>`: that HTTP error in OpenAI's error body (`ratelimited-<s>`: 429 with
  `retry-after: <s>`).
- `window-<n>`: a hard context window of n tokens (words and punctuation marks, its own count):
  a longer input is refused with 400 `context_length_exceeded`; asked to summarise (the
  worker's summary instructions), it keeps each "FACT" line; else answers "noted: …".
- `words-<n>`: n text deltas `w0 w1 …`; `incomplete`: 3 words, then `response.incomplete`
  (`max_output_tokens`); `failed-<code>`: one word, then `response.failed` with that code.
- `reasoning…`: a reasoning model: a reasoning item first, its summary streamed in two parts,
  its encrypted content given when `include` asks for it; then as below.
- `…tools…`: "Let me check." and a `function_call` of the first offered tool (arguments in two
  deltas); once its output came, "tool said: <output>".
- anything else: says back the instructions, the last user text and each image it got
  (`instructions=… user=… image=<media type>:<bytes>`).

Usage: input tokens counted its own way, `cached_tokens` the part of the input that repeats the
start of a recent request (no 1,024-token minimum, unlike OpenAI).
"""

from __future__ import annotations

import asyncio
import base64
import re
from collections import deque
from typing import Any

import orjson

from agent_worker.compaction import SUMMARY_INSTRUCTIONS
from devkit.anthropic_rules import Refused
from devkit.responses_rules import check_body, encrypted_of, is_reasoning_model
from devkit.upstream import ThreadedServer, read_json
from devkit.windowed_upstream import tokens_of

API_KEY = "sk-responses-standin"
_FACT = re.compile(r"FACT[^\n.]*")
_ERROR_TYPES = {400: "invalid_request_error", 401: "invalid_request_error", 429: "requests"}
_ERROR_CODES = {401: "invalid_api_key", 429: "rate_limit_exceeded", 500: "server_error"}
Frame = bytes | None  # None: a pause, so that what follows arrives in another read


def _text(content: Any) -> str:
    if isinstance(content, list):
        return " ".join(part.get("text", "") for part in content if isinstance(part, dict))
    return content or ""


def _shared(one: str, other: str) -> int:
    """The length of the prefix two strings share."""
    return next(
        (i for i, (a, b) in enumerate(zip(one, other, strict=False)) if a != b),
        min(len(one), len(other)),
    )


class ResponsesStandIn(ThreadedServer):
    def __init__(self, keys: dict[str, int] | None = None) -> None:
        """`keys`: the API keys it knows and the status each gets (200: served; 429: rate
        limited, with `retry-after: 1`; 401: revoked). By default API_KEY alone, served."""
        self.keys = keys if keys is not None else {API_KEY: 200}
        self.requests: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.refusals: list[str] = []
        self.usages: list[dict[str, Any]] = []
        self.overflows = 0
        self.summaries = 0
        self._recent: deque[str] = deque(maxlen=64)  # recent inputs, serialised
        super().__init__()

    def models_asked(self) -> list[str]:
        return [str(request.get("model")) for request in self.requests]

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        headers = {name.decode().lower(): value.decode() for name, value in scope["headers"]}
        try:
            if scope["method"] != "POST" or scope["path"] != "/v1/responses":
                raise Refused(404, f"Invalid URL ({scope['method']} {scope['path']})")
            body = await read_json(receive)
            self.requests.append(body)
            self.headers.append(headers)
            key = headers.get("authorization", "").removeprefix("Bearer ")
            status = self.keys.get(key, 401)
            if status == 401:
                raise Refused(401, "Incorrect API key provided.")
            if status == 429:
                raise Refused(429, "Rate limit reached for requests", [(b"retry-after", b"1")])
            check_body(body)
            model = str(body["model"])
            if model.startswith("status-"):
                raise Refused(int(model.split("-")[1]), f"stand-in says {model}")
            if found := re.match(r"ratelimited-(\d+)", model):
                raise Refused(
                    429, "Rate limit reached", [(b"retry-after", found.group(1).encode())]
                )
            frames = self._frames(body, model)
        except Refused as refused:
            if refused.status == 400:
                self.refusals.append(refused.message)
            await self._error(send, refused)
            return
        start = {"type": "http.response.start", "status": 200}
        await send({**start, "headers": [(b"content-type", b"text/event-stream")]})
        for frame in frames:
            if frame is None:
                await asyncio.sleep(0.002)
                continue
            await send({"type": "http.response.body", "body": frame, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    @staticmethod
    async def _error(send: Any, refused: Refused) -> None:
        code = "context_length_exceeded" if "context window" in refused.message else None
        error = {
            "message": refused.message,
            "type": _ERROR_TYPES.get(refused.status, "server_error"),
            "param": None,
            "code": code or _ERROR_CODES.get(refused.status),
        }
        headers = [(b"content-type", b"application/json"), *refused.headers]
        await send({"type": "http.response.start", "status": refused.status, "headers": headers})
        await send({"type": "http.response.body", "body": orjson.dumps({"error": error})})

    def _usage(self, body: dict[str, Any], output_tokens: int) -> dict[str, Any]:
        serialised = orjson.dumps(body.get("input")).decode()
        counted = tokens_of(serialised + (body.get("instructions") or ""))
        # OpenAI caches prefixes whether or not a key routes them: the longest prefix this
        # input shares with a recent one is read from the cache.
        cached = max(
            (tokens_of(serialised[: _shared(before, serialised)]) for before in self._recent),
            default=0,
        )
        self._recent.append(serialised)
        usage = {
            "input_tokens": counted,
            "input_tokens_details": {"cached_tokens": cached, "cache_write_tokens": 0},
            "output_tokens": output_tokens,
            "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": counted + output_tokens,
        }
        self.usages.append(usage)
        return usage

    def _frames(self, body: dict[str, Any], model: str) -> list[Frame]:
        items = body["input"] if isinstance(body["input"], list) else []
        if found := re.match(r"window-(\d+)", model):
            window = int(found.group(1))
            counted = tokens_of(orjson.dumps(items).decode() + (body.get("instructions") or ""))
            if counted > window:
                self.overflows += 1
                raise Refused(
                    400,
                    "Your input exceeds the context window of this model. Please adjust your"
                    " input and try again.",
                )
        stream = EventStream(body, model)
        if is_reasoning_model(model):
            stream.reasoning(
                f"The user asked {model}.",
                "Think it through.",
                sealed="reasoning.encrypted_content" in (body.get("include") or ()),
            )
        outputs = [item for item in items if item.get("type") == "function_call_output"]
        last = items[-1] if items else {"content": body["input"]}
        if outputs and outputs is not None and last.get("type") == "function_call_output":
            words = [f"tool said: {item['output']}" for item in outputs[-1:]]
        elif "tools" in model and body.get("tools"):
            stream.message(["Let me check."])
            stream.function_call(body["tools"][0]["name"], ['{"city": ', '"Paris"}'])
            return stream.completed(self._usage(body, 9))
        elif found := re.match(r"words-(\d+)", model):
            words = [f"w{i} " for i in range(int(found.group(1)))]
        elif model == "incomplete":
            stream.message(["w0 ", "w1 ", "w2 "])
            return stream.completed(self._usage(body, 3), incomplete="max_output_tokens")
        elif found := re.match(r"failed-(\w+)", model):
            stream.message(["one "])
            return stream.failed(found.group(1), "The model failed mid-answer.")
        elif model.startswith("window-"):
            words = [self._windowed_reply(body, items)]
        else:
            words = [self._said_back(body, last)]
        stream.message(words)
        return stream.completed(self._usage(body, len(words)))

    def _windowed_reply(self, body: dict[str, Any], items: list[dict[str, Any]]) -> str:
        texts = [_text(item.get("content") or item.get("output")) for item in items]
        if body.get("instructions") == SUMMARY_INSTRUCTIONS:
            self.summaries += 1
            facts = dict.fromkeys(_FACT.findall("\n".join(texts)))
            return ". ".join(facts) or "Small talk, nothing to keep."
        if "which facts?" in texts[-1]:
            return ". ".join(dict.fromkeys(_FACT.findall("\n".join(texts)))) or "none"
        return "noted: " + " ".join(texts[-1].split()[:12])

    @staticmethod
    def _said_back(body: dict[str, Any], last: dict[str, Any]) -> str:
        content = last.get("content")
        parts: list[dict[str, str]] = (
            content
            if isinstance(content, list)
            else [{"type": "input_text", "text": content or ""}]
        )
        text = " ".join(part["text"] for part in parts if part["type"] == "input_text")
        images = []
        for part in parts:
            if part["type"] == "input_image":
                media_type, _, data = part["image_url"].removeprefix("data:").partition(";base64,")
                images.append(f"image={media_type}:{len(base64.b64decode(data))}")
        instructions = body.get("instructions") or ""
        return " ".join([f"instructions={instructions}", f"user={text}", *images])


class EventStream:
    """A response's events, in the order and shapes OpenAI streams them."""

    def __init__(self, body: dict[str, Any], model: str) -> None:
        self.frames: list[Frame] = []
        self.output: list[dict[str, Any]] = []
        self._sequence = 0
        self._response = {
            "id": "resp_standin",
            "object": "response",
            "created_at": 1_700_000_000,
            "model": model,
            "status": "in_progress",
            "output": [],
            "parallel_tool_calls": body.get("parallel_tool_calls", True),
            "tool_choice": body.get("tool_choice", "auto"),
            "tools": body.get("tools") or [],
            "error": None,
            "incomplete_details": None,
            "instructions": body.get("instructions"),
            "metadata": {},
            "temperature": body.get("temperature"),
            "top_p": body.get("top_p"),
            "store": body.get("store", True),
            "usage": None,
        }
        self._event("response.created", response=dict(self._response))
        self._event("response.in_progress", response=dict(self._response))

    def _event(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "sequence_number": self._sequence, **fields}
        self._sequence += 1
        self.frames.append(b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps(event)))

    def _added(self, item: dict[str, Any]) -> int:
        index = len(self.output)
        self._event("response.output_item.added", output_index=index, item=item)
        return index

    def _done(self, index: int, item: dict[str, Any]) -> None:
        self.output.append(item)
        self._event("response.output_item.done", output_index=index, item=item)

    def reasoning(self, *parts: str, sealed: bool) -> None:
        item_id = f"rs_standin_{len(self.output)}"
        item: dict[str, Any] = {"type": "reasoning", "id": item_id, "summary": []}
        index = self._added(item)
        where = {"item_id": item_id, "output_index": index}
        for number, text in enumerate(parts):
            empty = {"type": "summary_text", "text": ""}
            self._event(
                "response.reasoning_summary_part.added", **where, summary_index=number, part=empty
            )
            self._event(
                "response.reasoning_summary_text.delta", **where, summary_index=number, delta=text
            )
            self.frames.append(None)
            self._event(
                "response.reasoning_summary_text.done", **where, summary_index=number, text=text
            )
            whole = {"type": "summary_text", "text": text}
            self._event(
                "response.reasoning_summary_part.done", **where, summary_index=number, part=whole
            )
        summary = [{"type": "summary_text", "text": text} for text in parts]
        done: dict[str, Any] = {**item, "summary": summary}
        if sealed:
            done["encrypted_content"] = encrypted_of(item_id, "\n\n".join(parts))
        self._done(index, done)

    def message(self, words: list[str]) -> None:
        item_id = f"msg_standin_{len(self.output)}"
        item = {
            "type": "message",
            "id": item_id,
            "role": "assistant",
            "status": "in_progress",
            "content": [],
        }
        index = self._added(item)
        where = {"item_id": item_id, "output_index": index, "content_index": 0}
        empty = {"type": "output_text", "text": "", "annotations": []}
        self._event("response.content_part.added", **where, part=empty)
        for word in words:
            self._event("response.output_text.delta", **where, delta=word, logprobs=[])
            self.frames.append(None)
        text = "".join(words)
        self._event("response.output_text.done", **where, text=text, logprobs=[])
        part = {"type": "output_text", "text": text, "annotations": []}
        self._event("response.content_part.done", **where, part=part)
        self._done(index, {**item, "status": "completed", "content": [part]})

    def function_call(self, name: str, pieces: list[str]) -> None:
        item_id = f"fc_standin_{len(self.output)}"
        call_id = f"call_standin_{len(self.output)}"
        item = {
            "type": "function_call",
            "id": item_id,
            "call_id": call_id,
            "name": name,
            "arguments": "",
            "status": "in_progress",
        }
        index = self._added(item)
        for piece in pieces:
            self._event(
                "response.function_call_arguments.delta",
                item_id=item_id,
                output_index=index,
                delta=piece,
            )
            self.frames.append(None)
        arguments = "".join(pieces)
        self._event(
            "response.function_call_arguments.done",
            item_id=item_id,
            output_index=index,
            arguments=arguments,
            name=name,
        )
        self._done(index, {**item, "arguments": arguments, "status": "completed"})

    def completed(self, usage: dict[str, Any], incomplete: str | None = None) -> list[Frame]:
        status = "incomplete" if incomplete else "completed"
        response = {**self._response, "status": status, "output": self.output, "usage": usage}
        if incomplete:
            response["incomplete_details"] = {"reason": incomplete}
        self._event(f"response.{status}", response=response)
        return self.frames

    def failed(self, code: str, message: str) -> list[Frame]:
        error = {"code": code, "message": message}
        response = {**self._response, "status": "failed", "output": self.output, "error": error}
        self._event("response.failed", response=response)
        return self.frames
