from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import orjson

from gateway_edge.errors import ApiError
from gateway_edge.sse import ChunkEncoder, error_frame, with_keep_alive
from tests.support.schemas import assert_valid


def payload(frame: bytes) -> dict:
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    return orjson.loads(frame[6:-2])


def test_frames_are_valid_chunks_sharing_id_and_created() -> None:
    encoder = ChunkEncoder("chatcmpl_1", 123, "openclaw")
    frames = [encoder.role(), encoder.delta('quote " and \n newline'), encoder.finish("length")]
    chunks = [payload(frame) for frame in frames]
    for chunk in chunks:
        assert_valid("CreateChatCompletionStreamResponse", chunk)
        assert (chunk["id"], chunk["created"], chunk["model"]) == ("chatcmpl_1", 123, "openclaw")
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert chunks[1]["choices"][0]["delta"]["content"] == 'quote " and \n newline'
    assert chunks[2]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "length",
    }
    usage = payload(encoder.usage({"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}))
    assert_valid("CreateChatCompletionStreamResponse", usage)
    assert usage["choices"] == []


def test_error_frame_has_the_error_shape() -> None:
    body = payload(
        error_frame(ApiError(502, "provider failed", "api_error", code="provider_error"))
    )
    assert body == {
        "error": {
            "message": "provider failed",
            "type": "api_error",
            "param": None,
            "code": "provider_error",
        }
    }


async def test_keep_alive_ticks_while_the_source_is_silent() -> None:
    async def slow() -> AsyncIterator[str]:
        yield "a"
        await asyncio.sleep(0.35)
        yield "b"

    seen = [item async for item in with_keep_alive(slow(), 0.1)]
    assert seen[0] == "a" and seen[-1] == "b"
    assert 2 <= seen.count(None) <= 4
