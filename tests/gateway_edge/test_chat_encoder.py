from __future__ import annotations

import orjson
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.chat_encoder import ChatEncoder
from gateway_edge.errors import ApiError
from gateway_edge.sse import error_frame
from tests.support.schemas import assert_valid


def payload(frame: bytes) -> dict:
    assert frame.startswith(b"data: ") and frame.endswith(b"\n\n")
    return orjson.loads(frame[6:-2])


def test_frames_are_valid_chunks_sharing_id_and_created() -> None:
    encoder = ChatEncoder("chatcmpl_1", 123, "openclaw")
    finished = pb.TurnFinished(
        finish_reason=pb.FINISH_REASON_LENGTH,
        usage=pb.Usage(prompt_tokens=1, completion_tokens=2, total_tokens=3, cached_tokens=1),
    )
    frames = [encoder.opening(), encoder.delta('quote " and \n newline'), encoder.finish(finished)]
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
    usage = payload(encoder.usage(finished))
    assert_valid("CreateChatCompletionStreamResponse", usage)
    assert usage["choices"] == []
    assert usage["usage"] == {
        "prompt_tokens": 1,
        "completion_tokens": 2,
        "total_tokens": 3,
        "prompt_tokens_details": {"cached_tokens": 1},
    }


def test_the_json_body_is_a_valid_completion_with_the_same_id() -> None:
    encoder = ChatEncoder("chatcmpl_2", 7, "openclaw:main")
    finished = pb.TurnFinished(finish_reason=pb.FINISH_REASON_STOP, usage=pb.Usage())
    body = orjson.loads(encoder.completion("hello", finished, None))
    assert_valid("CreateChatCompletionResponse", body)
    assert (body["id"], body["created"], body["model"]) == ("chatcmpl_2", 7, "openclaw:main")
    assert body["choices"][0]["message"]["content"] == "hello"
    assert body["choices"][0]["logprobs"] is None and body["choices"][0]["finish_reason"] == "stop"
    scored = orjson.loads(encoder.completion("x", finished, []))
    assert scored["choices"][0]["logprobs"] == {"content": [], "refusal": None}


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


def test_a_finish_reason_this_edge_does_not_know_is_logged_not_a_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    encoder = ChatEncoder("chatcmpl_1", 123, "openclaw")
    newer = pb.TurnFinished(finish_reason=9)  # type: ignore[arg-type]
    chunk = payload(encoder.finish(newer))
    assert chunk["choices"][0]["finish_reason"] == "stop"
    assert "unknown finish_reason 9" in caplog.text
    whole = orjson.loads(encoder.whole([pb.TextDelta(text="hi")], newer, []))
    assert whole["choices"][0]["finish_reason"] == "stop"
