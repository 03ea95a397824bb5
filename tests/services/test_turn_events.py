"""`services.turn_events` against the proto: its kinds are exactly the `event` oneof's fields,
and an event of a kind this build does not know is named by its field number."""

from __future__ import annotations

from typing import get_args

from clawgate.agent.v1 import agent_service_pb2 as pb
from services.turn_events import EventKind, kind_of, unknown_kind


def test_the_kinds_are_the_oneofs_fields() -> None:
    fields = pb.RunTurnEvent.DESCRIPTOR.oneofs_by_name["event"].fields
    assert set(get_args(EventKind)) == {field.name for field in fields}


def test_an_unknown_kind_reads_as_none_and_is_named_by_its_field() -> None:
    # A newer worker's event: field 99 of RunTurnEvent (a length-delimited message), which this
    # build's RunTurnEvent keeps as an unknown field.
    newer = _field(99, b"\x0a\x02hi")
    event = pb.RunTurnEvent.FromString(newer)
    assert kind_of(event) is None
    assert unknown_kind(event) == "an event of a kind this build does not know (field 99)"
    assert kind_of(pb.RunTurnEvent(delta=pb.TextDelta(text="x"))) == "delta"


def _field(number: int, payload: bytes) -> bytes:
    """A length-delimited field on the wire: varint key, varint length, bytes."""

    def varint(value: int) -> bytes:
        out = bytearray()
        while True:
            byte, value = value & 0x7F, value >> 7
            out.append(byte | (0x80 if value else 0))
            if not value:
                return bytes(out)

    return varint(number << 3 | 2) + varint(len(payload)) + payload
