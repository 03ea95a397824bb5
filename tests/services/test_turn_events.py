"""`services.turn_events` against the proto: its kinds are exactly the `event` oneof's fields,
and an event of a kind this build does not know is named by its field number."""

from __future__ import annotations

import sys
import typing
from types import FrameType
from typing import get_args

from clawgate.agent.v1 import agent_service_pb2 as pb
from services.turn_events import EventKind, kind_of, unknown_kind
from tests.support.newer_events import event_of_unknown_kind


def test_the_kinds_are_the_oneofs_fields() -> None:
    fields = pb.RunTurnEvent.DESCRIPTOR.oneofs_by_name["event"].fields
    assert set(get_args(EventKind)) == {field.name for field in fields}


def test_an_unknown_kind_reads_as_none_and_is_named_by_its_field() -> None:
    event = event_of_unknown_kind(99)
    assert kind_of(event) is None
    assert unknown_kind(event) == "an event of a kind this build does not know (field 99)"
    assert kind_of(pb.RunTurnEvent(delta=pb.TextDelta(text="x"))) == "delta"


def test_reading_a_kind_builds_no_typing_objects() -> None:
    """Every event of every turn passes here: `cast(EventKind | None, …)` built a typing union
    on each call, 11% of the edge's CPU under bench.run edge-stub."""
    typing_calls: list[str] = []

    def watch(frame: FrameType, event: str, _arg: object) -> None:
        if event == "call" and frame.f_code.co_filename == typing.__file__:
            typing_calls.append(frame.f_code.co_name)

    event = pb.RunTurnEvent(delta=pb.TextDelta(text="x"))
    sys.setprofile(watch)
    try:
        kind_of(event)
    finally:
        sys.setprofile(None)
    assert typing_calls == []
