"""Events a newer worker could send: a `RunTurnEvent` kind this build's proto does not know."""

from __future__ import annotations

from clawgate.agent.v1 import agent_service_pb2 as pb


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def event_of_unknown_kind(field_number: int = 99) -> pb.RunTurnEvent:
    """A `RunTurnEvent` whose only field is a message at `field_number` (length-delimited on
    the wire), which this build keeps as an unknown field."""
    payload = b"\x0a\x02hi"
    wire = _varint(field_number << 3 | 2) + _varint(len(payload)) + payload
    return pb.RunTurnEvent.FromString(wire)
