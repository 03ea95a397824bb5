"""`GET /v1/usage`: what model calls used and cost, summed over UTC days and grouped, from the
usage records the workers store with each turn. Reading needs operator.read; a caller without
operator.admin sees only their own usage (the workers make the same check)."""

from __future__ import annotations

import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response

from clawgate.agent.v1 import agent_service_pb2 as pb
from gateway_edge.errors import bad_request
from gateway_edge.json_responses import json_response
from gateway_edge.principal import READ
from gateway_edge.state import Admitted, admitted
from gateway_edge.worker_calls import ask

router = APIRouter()
GROUPS = {
    "identity": pb.USAGE_GROUP_IDENTITY,
    "agent": pb.USAGE_GROUP_AGENT,
    "model": pb.USAGE_GROUP_MODEL,
    "day": pb.USAGE_GROUP_DAY,
    "session": pb.USAGE_GROUP_SESSION,
}
DEFAULT_DAYS = 7  # without `from`: the week that ends with `to`
_DAY = datetime.timedelta(days=1)


def _day(text: str, param: str) -> datetime.date:
    try:
        return datetime.date.fromisoformat(text)
    except ValueError:
        raise bad_request(
            f"Invalid '{param}': {text!r} is not a date (YYYY-MM-DD).", param
        ) from None


def _groups(text: str) -> list[str]:
    groups = [part.strip() for part in text.split(",") if part.strip()]
    unknown = [group for group in groups if group not in GROUPS]
    if unknown:
        raise bad_request(
            f"Invalid 'group_by': {', '.join(unknown)!r}; use any of"
            " identity, agent, model, day, session.",
            "group_by",
        )
    return list(dict.fromkeys(groups))


def _midnight(day: datetime.date) -> float:
    return datetime.datetime.combine(day, datetime.time(), datetime.UTC).timestamp()


@router.get("/v1/usage")
async def usage(
    call: Annotated[Admitted, Depends(admitted)],
    from_: Annotated[str, Query(alias="from")] = "",
    to: str = "",
    group_by: str = "",
) -> Response:
    """`from` and `to`: UTC days, both included (default: the last seven days up to today);
    `group_by`: a comma list of identity, agent, model, day and session."""
    state, principal, _ = call
    principal.require(READ)
    last = _day(to, "to") if to else datetime.datetime.now(datetime.UTC).date()
    first = _day(from_, "from") if from_ else last - (DEFAULT_DAYS - 1) * _DAY
    if first > last:
        raise bad_request("Invalid 'from': it comes after 'to'.", "from")
    groups = _groups(group_by)
    answer = await ask(
        state.workers,
        "GetUsage",
        pb.GetUsageRequest(
            from_time=_midnight(first),
            to_time=_midnight(last + _DAY),
            group_by=[GROUPS[group] for group in groups],
            caller=principal.caller(),
        ),
    )
    keys = {
        "identity": "identity",
        "agent": "agent_id",
        "model": "model",
        "day": "day",
        "session": "session_key",
    }
    return json_response(
        {
            "object": "list",
            "from": first.isoformat(),
            "to": last.isoformat(),
            "data": [
                {
                    **{group: getattr(row, keys[group]) for group in groups},
                    "requests": row.requests,
                    "input_tokens": row.input_tokens,
                    "output_tokens": row.output_tokens,
                    "cache_read_tokens": row.cache_read_tokens,
                    "cache_write_tokens": row.cache_write_tokens,
                    "cost_usd": round(row.cost_usd, 6),
                }
                for row in answer.rows
            ],
        }
    )
