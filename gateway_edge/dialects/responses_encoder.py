"""The shapes of one `/v1/responses` answer: the `response` object, or its SSE events
(`event: <type>` + `data: <json>`, numbered by `sequence_number`). A text delta's frame is
pre-encoded around its text; the rest are built once per item. An `AnswerEncoder`
(answer_stream.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import ApiError
from gateway_edge.sse import KEEP_ALIVE
from services.ids import random_hex


def _frame(event: dict[str, Any]) -> bytes:
    return b"event: " + event["type"].encode() + b"\ndata: " + orjson.dumps(event) + b"\n\n"


class ResponsesEncoder:
    def __init__(self, created_at: int, model: str, request: dict[str, Any]) -> None:
        self.id = f"resp_{random_hex()}"
        self._created_at = created_at
        self._model = model
        self._request = request  # echoed fields: tools, tool_choice, instructions, ...
        self._sequence = 0
        self._output: list[dict[str, Any]] = []
        self._text: list[str] = []
        self._message: dict[str, Any] | None = None  # the open message item
        self._call: dict[str, Any] | None = None  # the open function_call item
        self._thinking: dict[str, Any] | None = None  # the open reasoning item
        self._thoughts: list[str] = []
        self._delta_head = b""

    # the response object

    def response(
        self, status: str, finished: pb.TurnFinished | None = None, error: str | None = None
    ) -> dict[str, Any]:
        request = self._request
        body: dict[str, Any] = {
            "id": self.id,
            "object": "response",
            "created_at": self._created_at,
            "status": status,
            "model": self._model,
            "output": self._output,
            "parallel_tool_calls": request.get("parallel_tool_calls", True),
            "tool_choice": request.get("tool_choice") or "auto",
            "tools": request.get("tools") or [],
            "instructions": request.get("instructions"),
            "metadata": request.get("metadata") or {},
            "temperature": request.get("temperature"),
            "top_p": request.get("top_p"),
            "max_output_tokens": request.get("max_output_tokens"),
            "previous_response_id": request.get("previous_response_id"),
            "user": request.get("user"),
            "error": None,
            "incomplete_details": None,
            "usage": None,
        }
        if finished is not None:
            usage = finished.usage
            body["usage"] = {
                "input_tokens": usage.prompt_tokens,
                "input_tokens_details": {
                    "cached_tokens": usage.cached_tokens,
                    "cache_write_tokens": usage.cache_write_tokens,
                },
                "output_tokens": usage.completion_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": usage.total_tokens,
            }
            if status == "incomplete":
                body["incomplete_details"] = {"reason": "max_output_tokens"}
        if error is not None:
            body["error"] = {"code": "server_error", "message": error}
        return body

    def whole(
        self,
        texts: Sequence[pb.TextDelta],
        finished: pb.TurnFinished,
        thoughts: Sequence[pb.ReasoningDelta] = (),
    ) -> bytes:
        """The non-stream answer: the reasoning item (when the model showed its thinking), one
        message item (when there is text), then the calls."""
        text = "".join([delta.text for delta in texts])
        status = _status_of(finished)
        if thoughts:
            thinking = "".join([thought.text for thought in thoughts])
            self._output.append(_reasoning_item(thinking, "completed"))
        if text or not finished.tool_calls:
            self._output.append(self._message_item(text, status))
        for call in finished.tool_calls:
            self._output.append(
                _call_item(f"fc_{random_hex()}", call.id, call.name, call.arguments)
            )
        return orjson.dumps(self.response(status, finished))

    # the stream

    def opening(self) -> bytes:
        return self._event("response.created", response=self.response("in_progress")) + self._event(
            "response.in_progress", response=self.response("in_progress")
        )

    def reasoning(self, delta: pb.ReasoningDelta) -> bytes:
        frames = b""
        item = self._thinking
        if item is None:
            frames = self._close_message() + self._close_call()
            item = self._thinking = _reasoning_item("", "in_progress")
            item["content"] = []
            self._output.append(item)
            frames += self._event(
                "response.output_item.added", output_index=len(self._output) - 1, item=item
            )
        self._thoughts.append(delta.text)
        return frames + self._event(
            "response.reasoning_text.delta",
            item_id=item["id"],
            output_index=self._output.index(item),
            content_index=0,
            delta=delta.text,
        )

    def text(self, delta: pb.TextDelta) -> bytes:
        text = delta.text
        frames = self._close_thinking() if self._thinking is not None else b""
        frames += b"" if self._message is not None else self._open_message()
        self._text.append(text)
        self._sequence += 1
        return (
            frames
            + self._delta_head
            + orjson.dumps(text)
            + b',"sequence_number":'
            + str(self._sequence - 1).encode()
            + b"}\n\n"
        )

    def tool_call(self, piece: pb.ToolCallDelta) -> bytes:
        frames = self._close_thinking() + self._close_message()
        if piece.id:  # a new call
            frames += self._close_call()
            item = _call_item(f"fc_{random_hex()}", piece.id, piece.name, "", "in_progress")
            self._call = item
            self._output.append(item)
            frames += self._event(
                "response.output_item.added", output_index=len(self._output) - 1, item=item
            )
        if self._call is not None and piece.arguments:
            self._call["arguments"] += piece.arguments
            frames += self._event(
                "response.function_call_arguments.delta",
                item_id=self._call["id"],
                output_index=len(self._output) - 1,
                delta=piece.arguments,
            )
        return frames

    def tool_run(self, event: pb.ToolRunStarted | pb.ToolRunFinished) -> bytes:
        return KEEP_ALIVE  # the agent's own tool runs are not the client's function calls

    def finish(self, finished: pb.TurnFinished) -> bytes:
        frames = self._close_thinking() + self._close_message() + self._close_call()
        status = _status_of(finished)
        kind = "response.completed" if status == "completed" else "response.incomplete"
        return frames + self._event(kind, response=self.response(status, finished))

    def failed(self, error: ApiError) -> bytes:
        frames = self._close_thinking() + self._close_message() + self._close_call()
        return frames + self._event(
            "response.failed", response=self.response("failed", error=error.message)
        )

    def _open_message(self) -> bytes:
        item = self._message_item("", "in_progress")
        item["content"] = []
        self._message = item
        self._output.append(item)
        index = len(self._output) - 1
        head = {
            "type": "response.output_text.delta",
            "item_id": item["id"],
            "output_index": index,
            "content_index": 0,
            "logprobs": [],
        }
        self._delta_head = (
            b"event: response.output_text.delta\ndata: " + orjson.dumps(head)[:-1] + b',"delta":'
        )
        return self._event("response.output_item.added", output_index=index, item=item) + (
            self._event(
                "response.content_part.added",
                item_id=item["id"],
                output_index=index,
                content_index=0,
                part=_text_part(""),
            )
        )

    def _close_message(self) -> bytes:
        item = self._message
        if item is None:
            return b""
        self._message = None
        text = "".join(self._text)
        self._text = []
        index = self._output.index(item)
        part = _text_part(text)
        item["content"] = [part]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return (
            self._event("response.output_text.done", **where, text=text, logprobs=[])
            + self._event("response.content_part.done", **where, part=part)
            + self._event("response.output_item.done", output_index=index, item=item)
        )

    def _close_thinking(self) -> bytes:
        item = self._thinking
        if item is None:
            return b""
        self._thinking = None
        text = "".join(self._thoughts)
        self._thoughts = []
        index = self._output.index(item)
        item["content"] = [{"type": "reasoning_text", "text": text}]
        item["status"] = "completed"
        where = {"item_id": item["id"], "output_index": index, "content_index": 0}
        return self._event("response.reasoning_text.done", **where, text=text) + self._event(
            "response.output_item.done", output_index=index, item=item
        )

    def _close_call(self) -> bytes:
        item = self._call
        if item is None:
            return b""
        self._call = None
        item["status"] = "completed"
        index = self._output.index(item)
        return self._event(
            "response.function_call_arguments.done",
            item_id=item["id"],
            output_index=index,
            arguments=item["arguments"],
        ) + self._event("response.output_item.done", output_index=index, item=item)

    def _message_item(self, text: str, status: str) -> dict[str, Any]:
        return {
            "id": f"msg_{random_hex()}",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": [_text_part(text)],
        }

    def _event(self, kind: str, **fields: Any) -> bytes:
        self._sequence += 1
        return _frame({"type": kind, **fields, "sequence_number": self._sequence - 1})


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _reasoning_item(text: str, status: str) -> dict[str, Any]:
    """The model's thinking as the Responses API's reasoning item (full text, no summary)."""
    return {
        "id": f"rs_{random_hex()}",
        "type": "reasoning",
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
        "status": status,
    }


def _call_item(
    item_id: str, call_id: str, name: str, arguments: str, status: str = "completed"
) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "call_id": call_id,
        "name": name,
        "arguments": arguments,
        "status": status,
    }


def _status_of(finished: pb.TurnFinished) -> str:
    return "incomplete" if finished.finish_reason == pb.FINISH_REASON_LENGTH else "completed"
