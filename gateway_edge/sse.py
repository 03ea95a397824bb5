"""Server-sent events framing for chat completion chunks, pre-encoded where it matters."""

from __future__ import annotations

import orjson

from gateway_edge.errors import ApiError

DONE = b"data: [DONE]\n\n"
KEEP_ALIVE = b": keep-alive\n\n"


class ChunkEncoder:
    """Builds the `data:` frames of one streamed completion; only the text is encoded per delta."""

    def __init__(self, completion_id: str, created: int, model: str) -> None:
        head = orjson.dumps(
            {
                "id": completion_id,
                "object": "chat.completion.chunk",
                "created": created,
                "model": model,
            }
        )[:-1]
        self._head = head
        self._delta_prefix = b"data: " + head + b',"choices":[{"index":0,"delta":{"content":'
        self._delta_suffix = b'},"logprobs":null,"finish_reason":null}]}\n\n'

    def _frame(self, rest: dict[str, object]) -> bytes:
        return b"data: " + self._head + b"," + orjson.dumps(rest)[1:] + b"\n\n"

    def role(self) -> bytes:
        return self._frame(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"role": "assistant", "content": ""},
                        "logprobs": None,
                        "finish_reason": None,
                    }
                ]
            }
        )

    def delta(self, text: str) -> bytes:
        return self._delta_prefix + orjson.dumps(text) + self._delta_suffix

    def delta_with_logprobs(self, text: str, logprobs: list[dict[str, object]]) -> bytes:
        return self._frame(
            {
                "choices": [
                    {
                        "index": 0,
                        "delta": {"content": text},
                        "logprobs": {"content": logprobs, "refusal": None},
                        "finish_reason": None,
                    }
                ]
            }
        )

    def finish(self, finish_reason: str) -> bytes:
        return self._frame(
            {
                "choices": [
                    {"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish_reason}
                ]
            }
        )

    def usage(self, usage: dict[str, int]) -> bytes:
        return self._frame({"choices": [], "usage": usage})


def error_frame(error: ApiError) -> bytes:
    return b"data: " + error.body() + b"\n\n"
