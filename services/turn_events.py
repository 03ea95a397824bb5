"""The kinds of event a turn streams over gRPC (`RunTurnEvent.event`), for every reader of the
wire: the edge and gRPC clients such as `clawgate agent`.

`EventKind` spells out the oneof's fields (tests/test_contract.py holds it to the proto), so a
`match` on `kind_of(event)` that ends in `assert_never` fails mypy when a kind is added and a
reader forgets it. An event whose kind this build does not know reads as None.
"""

from __future__ import annotations

from typing import Literal

from google.protobuf import unknown_fields

from clawgate.agent.v1 import agent_service_pb2 as pb

EventKind = Literal[
    "started",
    "delta",
    "finished",
    "error",
    "tool_call",
    "tool_started",
    "tool_finished",
    "reasoning",
]


def kind_of(event: pb.RunTurnEvent) -> EventKind | None:
    # Not `cast(EventKind | None, …)`: every event of every turn passes here, and that
    # expression builds a typing union on each call.
    return event.WhichOneof("event")  # type: ignore[return-value]


def unknown_kind(event: pb.RunTurnEvent) -> str:
    """An event of a kind this build does not know (a newer worker's), named as well as it can
    be: by its field number."""
    unknown = unknown_fields.UnknownFieldSet(event)
    numbers = sorted({unknown[index].field_number for index in range(len(unknown))})
    fields = ", ".join(map(str, numbers)) or "none"
    return f"an event of a kind this build does not know (field {fields})"
