"""An OpenAI-compatible upstream stand-in for benchmarks: raw ASGI, answers at once.

Streams 16 content chunks (all written at once) then `[DONE]`, or the same text as one JSON
completion; a request that offers `tools` gets "Let me check." and one call of `get_weather`;
`GET /v1/models` for health checks. `POST /v1/messages` answers as Anthropic's Messages API
does, with the same 16 words as text deltas. Everything is pre-encoded: this is the floor every
gateway is compared with.

    python -m bench.upstream_standin --port 18001
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson

CHUNKS = 16
_WORDS = [f"w{index} " for index in range(CHUNKS)]


def _chunk(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    return (
        b"data: "
        + orjson.dumps(
            {
                "id": "chatcmpl-standin",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": "standin",
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}],
            }
        )
        + b"\n\n"
    )


STREAM_BODY = (
    _chunk({"role": "assistant", "content": ""})
    + b"".join(_chunk({"content": word}) for word in _WORDS)
    + _chunk({}, "stop")
    + b"data: "
    + orjson.dumps(
        {
            "id": "chatcmpl-standin",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": "standin",
            "choices": [],
            "usage": {"prompt_tokens": 8, "completion_tokens": CHUNKS, "total_tokens": 8 + CHUNKS},
        }
    )
    + b"\n\n"
    + b"data: [DONE]\n\n"
)


def _completion(message: dict[str, Any], finish_reason: str, completion_tokens: int) -> bytes:
    return orjson.dumps(
        {
            "id": "chatcmpl-standin",
            "object": "chat.completion",
            "created": 1700000000,
            "model": "standin",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", **message},
                    "finish_reason": finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": 8,
                "completion_tokens": completion_tokens,
                "total_tokens": 8 + completion_tokens,
            },
        }
    )


JSON_BODY = _completion({"content": "".join(_WORDS)}, "stop", CHUNKS)
_CALL = {"id": "call_standin", "type": "function"}
_ARGUMENTS = ['{"city": ', '"Paris"}']
TOOL_STREAM_BODY = (
    _chunk({"role": "assistant", "content": "Let me check."})
    + _chunk({"tool_calls": [{"index": 0, **_CALL, "function": {"name": "get_weather"}}]})
    + b"".join(
        _chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
        for piece in _ARGUMENTS
    )
    + _chunk({}, "tool_calls")
    + b"data: [DONE]\n\n"
)
_WHOLE_CALL = {**_CALL, "function": {"name": "get_weather", "arguments": "".join(_ARGUMENTS)}}
TOOL_JSON_BODY = _completion(
    {"content": "Let me check.", "tool_calls": [_WHOLE_CALL]}, "tool_calls", 4
)


def _anthropic_event(kind: str, data: dict[str, Any]) -> bytes:
    return b"event: %s\ndata: %s\n\n" % (kind.encode(), orjson.dumps({"type": kind, **data}))


ANTHROPIC_STREAM_BODY = (
    _anthropic_event(
        "message_start",
        {
            "message": {
                "id": "msg_standin",
                "type": "message",
                "role": "assistant",
                "content": [],
                "model": "standin",
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 8, "output_tokens": 1},
            }
        },
    )
    + _anthropic_event(
        "content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}}
    )
    + b"".join(
        _anthropic_event(
            "content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": word}}
        )
        for word in _WORDS
    )
    + _anthropic_event("content_block_stop", {"index": 0})
    + _anthropic_event(
        "message_delta",
        {
            "delta": {"stop_reason": "end_turn", "stop_sequence": None},
            "usage": {"output_tokens": CHUNKS},
        },
    )
    + _anthropic_event("message_stop", {})
)
MODELS_BODY = orjson.dumps(
    {
        "object": "list",
        "data": [{"id": "standin", "object": "model", "created": 0, "owned_by": "bench"}],
    }
)
_JSON_HEADERS = [(b"content-type", b"application/json")]
_SSE_HEADERS = [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    if scope["method"] == "GET":
        await send({"type": "http.response.start", "status": 200, "headers": _JSON_HEADERS})
        await send({"type": "http.response.body", "body": MODELS_BODY})
        return
    if scope["path"] == "/v1/messages":
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})
        await send({"type": "http.response.body", "body": ANTHROPIC_STREAM_BODY})
        return
    stream = b'"stream":true' in body.replace(b" ", b"")
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": _SSE_HEADERS if stream else _JSON_HEADERS,
        }
    )
    if b'"tools"' in body:
        answer = TOOL_STREAM_BODY if stream else TOOL_JSON_BODY
    else:
        answer = STREAM_BODY if stream else JSON_BODY
    await send({"type": "http.response.body", "body": answer})


def serve(asgi_app: Any, port: int, **options: Any) -> None:
    """Runs a stand-in the way every one here runs: uvloop, httptools, no logs."""
    import uvicorn

    uvicorn.run(
        asgi_app,
        host="127.0.0.1",
        port=port,
        loop="uvloop",
        http="httptools",
        log_level="warning",
        access_log=False,
        lifespan="off",
        **options,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=18001)
    serve(app, parser.parse_args().port)


if __name__ == "__main__":
    main()
