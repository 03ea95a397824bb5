"""The shapes of one chat completion answer: the JSON body, or its SSE chunks (pre-encoded
where it matters: only the text is encoded per delta). An `AnswerEncoder` (answer_stream.py)."""

from __future__ import annotations

from collections.abc import Sequence

import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.dialects.answer_values import finish_reason_of, logprobs_json, usage_of
from gateway_edge.errors import ApiError
from gateway_edge.sse import KEEP_ALIVE, error_frame


class ChatEncoder:
    def __init__(
        self,
        completion_id: str,
        created: int,
        model: str,
        include_usage: bool = False,
        with_logprobs: bool = False,
    ) -> None:
        self.id = completion_id
        self._include_usage = include_usage
        self._with_logprobs = with_logprobs
        self.created = created
        self.model = model
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

    def whole(
        self,
        texts: Sequence[pb.TextDelta],
        finished: pb.TurnFinished,
        thoughts: Sequence[pb.ReasoningDelta] = (),
    ) -> bytes:
        """The whole answer as one `chat.completion` body."""
        logprobs: list[dict[str, object]] | None = None
        if self._with_logprobs:  # reading them costs: only when asked
            logprobs = [score for delta in texts for score in logprobs_json(delta.logprobs)]
        text = "".join([delta.text for delta in texts])
        reasoning = "".join([thought.text for thought in thoughts])
        return self.completion(text, finished, logprobs, reasoning)

    def completion(
        self,
        text: str,
        finished: pb.TurnFinished,
        logprobs: list[dict[str, object]] | None,
        reasoning: str = "",
    ) -> bytes:
        """`logprobs` None when not asked; `reasoning` the model's thinking, when it showed any
        (as `reasoning_content`, the field reasoning models' OpenAI-compatible servers use)."""
        message: dict[str, object] = {"role": "assistant", "content": text, "refusal": None}
        if reasoning:
            message["reasoning_content"] = reasoning
        if finished.tool_calls:
            message["content"] = text or None  # the commentary before the calls, if any
            message["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in finished.tool_calls
            ]
        return orjson.dumps(
            {
                "id": self.id,
                "object": "chat.completion",
                "created": self.created,
                "model": self.model,
                "choices": [
                    {
                        "index": 0,
                        "message": message,
                        "logprobs": None
                        if logprobs is None
                        else {"content": logprobs, "refusal": None},
                        "finish_reason": finish_reason_of(finished),
                    }
                ],
                "usage": usage_of(finished),
            }
        )

    def _chunk(self, rest: dict[str, object]) -> bytes:
        return b"data: " + self._head + b"," + orjson.dumps(rest)[1:] + b"\n\n"

    def _choice_chunk(
        self, delta: dict[str, object], logprobs: object = None, finish_reason: str | None = None
    ) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._chunk({"choices": [choice]})

    def opening(self) -> bytes:
        return self._choice_chunk({"role": "assistant", "content": ""})

    def text(self, delta: pb.TextDelta) -> bytes:
        if self._with_logprobs and delta.logprobs:
            return self.delta_with_logprobs(delta.text, delta.logprobs)
        return self.delta(delta.text)

    def delta(self, text: str) -> bytes:
        return self._delta_prefix + orjson.dumps(text) + self._delta_suffix

    def delta_with_logprobs(self, text: str, logprobs: Sequence[pb.TokenLogprob]) -> bytes:
        scores = {"content": logprobs_json(logprobs), "refusal": None}
        return self._choice_chunk({"content": text}, scores)

    def reasoning(self, delta: pb.ReasoningDelta) -> bytes:
        return self._choice_chunk({"reasoning_content": delta.text})

    def tool_call(self, piece: pb.ToolCallDelta) -> bytes:
        """A `delta.tool_calls` chunk: a call's first piece names it, later ones add arguments."""
        call: dict[str, object] = {"index": piece.index}
        if piece.id:
            call["id"] = piece.id
            call["type"] = "function"
            call["function"] = {"name": piece.name, "arguments": piece.arguments}
        else:
            function: dict[str, str] = {"arguments": piece.arguments}
            if piece.name:
                function["name"] = piece.name
            call["function"] = function
        return self._choice_chunk({"tool_calls": [call]})

    def tool_run(self, event: pb.ToolRunStarted | pb.ToolRunFinished) -> bytes:
        return KEEP_ALIVE  # the client sees no call of the agent's own: the stream stays up

    def finish(self, finished: pb.TurnFinished) -> bytes:
        frame = self._choice_chunk({}, finish_reason=finish_reason_of(finished))
        return frame + self.usage(finished) if self._include_usage else frame

    def failed(self, error: ApiError) -> bytes:
        return error_frame(error)

    def usage(self, finished: pb.TurnFinished) -> bytes:
        return self._chunk({"choices": [], "usage": usage_of(finished)})
