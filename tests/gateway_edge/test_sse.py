from __future__ import annotations

import orjson

from gateway_edge.errors import ApiError
from gateway_edge.sse import ChunkEncoder, error_frame
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
