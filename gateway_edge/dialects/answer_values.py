"""The edge's proto → plain-value conversions of a turn's events, for every response encoder
(requests are built by each endpoint's own module, turn_input.py for chat completions)."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from clawgate.agent.v1 import agent_service_pb2 as pb

log = logging.getLogger("clawgate.edge")

FINISH_REASONS = {
    pb.FINISH_REASON_UNSPECIFIED: "stop",
    pb.FINISH_REASON_STOP: "stop",
    pb.FINISH_REASON_LENGTH: "length",
    pb.FINISH_REASON_TOOL_CALLS: "tool_calls",
    pb.FINISH_REASON_CONTENT_FILTER: "content_filter",
}


def finish_reason_of(finished: pb.TurnFinished) -> str:
    """The finish reason as OpenAI names it; one this edge does not know (a newer worker's)
    is said in the log and answered as "stop", never a failed answer."""
    reason = FINISH_REASONS.get(finished.finish_reason)
    if reason is None:
        log.warning(
            "unknown finish_reason %d from a worker: answered as 'stop'", finished.finish_reason
        )
        return "stop"
    return reason


def usage_of(finished: pb.TurnFinished) -> dict[str, object]:
    usage = finished.usage
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _score(entry: pb.TokenLogprob) -> dict[str, object]:
    return {
        "token": entry.token,
        "logprob": entry.logprob,
        "bytes": list(entry.token_bytes) or None,
    }


def logprobs_json(entries: Iterable[pb.TokenLogprob]) -> list[dict[str, object]]:
    """OpenAI's `logprobs.content` entries."""
    return [
        {**_score(entry), "top_logprobs": [_score(top) for top in entry.top_logprobs]}
        for entry in entries
    ]
