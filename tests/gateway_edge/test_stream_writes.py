"""How a streamed answer's frames reach the client when the link's reader writes them itself
(answer_stream.py): over a real edge process in front of a scripted gRPC worker in this test,
with raw sockets for clients that stop reading."""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest

from clawgate.agent.v1 import agent_service_pb2 as pb
from clawgate.agent.v1 import agent_service_pb2_grpc as pb_grpc
from devkit.processes import TOKEN, echo_config, start_edge, write_config
from gateway_edge.asgi import send_now
from tests.support.scripted_worker import serve_scripted

PIECES = 256
PIECE_CHARS = 32 * 1024  # 8 MB in all: more than the sockets between edge and client hold
QUIET_SECONDS = 1.6  # "slow": text, this long without events, then the finish


def piece(index: int) -> str:
    return f"<{index:04d}>" + "x" * (PIECE_CHARS - 6)


class ScriptedWorker(pb_grpc.AgentServiceServicer):
    """Each turn's text as fast as its credit allows, one piece an event, the events spread
    over messages of one to three; the agent `slow` goes quiet before its finish."""

    async def Exchange(  # noqa: N802
        self, requests: AsyncIterator[pb.ExchangeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ExchangeResponse]:
        async for request in requests:
            for opened in request.opens:
                turn = opened.turn_id
                yield _message(turn, pb.RunTurnEvent(started=pb.TurnStarted(run_id="r", model="m")))
                if opened.request.agent_id == "slow":
                    yield _message(turn, _text("before "))
                    await asyncio.sleep(QUIET_SECONDS)
                else:
                    index = 0
                    while index < PIECES:
                        together = [
                            _text(piece(i))
                            for i in range(index, min(index + 1 + index % 3, PIECES))
                        ]
                        index += len(together)
                        yield _message(turn, *together)
                finished = pb.TurnFinished(finish_reason=pb.FINISH_REASON_STOP)
                yield _message(turn, pb.RunTurnEvent(finished=finished))

    async def ListAgents(  # noqa: N802 - the edge learns its agents here
        self, request: pb.ListAgentsRequest, context: grpc.aio.ServicerContext
    ) -> pb.ListAgentsResponse:
        return pb.ListAgentsResponse(
            agents=[pb.Agent(id="main", is_default=True), pb.Agent(id="slow")]
        )


def _text(text: str) -> pb.RunTurnEvent:
    return pb.RunTurnEvent(delta=pb.TextDelta(text=text))


def _message(turn_id: int, *events: pb.RunTurnEvent) -> pb.ExchangeResponse:
    return pb.ExchangeResponse(turns=[pb.TurnEvents(turn_id=turn_id, events=events)])


@pytest.fixture
async def edge_port(tmp_path: Path) -> AsyncIterator[int]:
    options = (("grpc.max_send_message_length", 16 * 1024 * 1024),)
    server, port = await serve_scripted(ScriptedWorker(), options)
    config = echo_config(tmp_path)
    config["gateway"]["workers"] = [f"127.0.0.1:{port}"]
    config["gateway"]["keepAliveSeconds"] = 0.5
    edge = config["gateway"]["port"]
    # The edge checks this loop's server while it starts: wait for it off the loop.
    process = await asyncio.to_thread(
        start_edge,
        write_config(tmp_path, config),
        f"http://127.0.0.1:{edge}",
        tmp_path / "edge.log",
    )
    try:
        yield edge
    finally:
        process.stop()
        await server.stop(None)


async def _stream(port: int, agent: str, pause_seconds: float = 0.0) -> bytes:
    """The whole raw answer of a streamed turn, read by a client that reads nothing for
    `pause_seconds` after sending its request (so that the edge's socket fills up)."""
    body = json.dumps(
        {
            "model": f"openclaw:{agent}",
            "stream": True,
            "messages": [{"role": "user", "content": "x"}],
        }
    ).encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port, limit=1 << 20)
    sock = writer.get_extra_info("socket")
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 * 1024)
    writer.write(
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
        + f"Authorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\n".encode()
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    await writer.drain()
    await asyncio.sleep(pause_seconds)
    answer = b""
    try:
        while block := await asyncio.wait_for(reader.read(1 << 20), 10):
            answer += block
    except TimeoutError:
        raise AssertionError(f"stuck after {len(answer)} bytes: {answer[-300:]!r}") from None
    writer.close()
    return answer


def _texts_and_comments(answer: bytes) -> tuple[list[str], list[bytes]]:
    head, _, chunked = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    body = b""
    while chunked:
        size_line, _, rest = chunked.partition(b"\r\n")
        size = int(size_line, 16)
        body, chunked = body + rest[:size], rest[size + 2 :]
        if size == 0:
            break
    frames = [frame for frame in body.split(b"\n\n") if frame]
    assert frames[-1] == b"data: [DONE]"
    texts = []
    for frame in frames[:-1]:
        if frame.startswith(b"data: "):
            delta = json.loads(frame[6:])["choices"][0]["delta"]
            texts.append(delta.get("content") or "")
    return texts, [frame for frame in frames if frame.startswith(b":")]


async def test_a_client_that_stops_reading_gets_every_piece_in_order(edge_port: int) -> None:
    answer = await _stream(edge_port, "main", pause_seconds=1.0)
    texts, _ = _texts_and_comments(answer)
    assert "".join(texts) == "".join(piece(index) for index in range(PIECES))


async def test_streams_sharing_the_reader_each_get_their_own_text(edge_port: int) -> None:
    # One stops reading (its socket full); the others run on meanwhile, each whole.
    answers = await asyncio.gather(
        _stream(edge_port, "main", pause_seconds=2.0),
        *(_stream(edge_port, "main") for _ in range(3)),
    )
    for answer in answers:
        texts, _ = _texts_and_comments(answer)
        assert "".join(texts) == "".join(piece(index) for index in range(PIECES))


async def test_a_quiet_stream_gets_keep_alives_after_text_went_out(edge_port: int) -> None:
    texts, comments = _texts_and_comments(await _stream(edge_port, "slow"))
    assert "".join(texts) == "before "
    assert comments and set(comments) == {b": keep-alive"}


async def test_send_now_sends_at_once_or_hands_over_the_rest() -> None:
    sent: list[object] = []
    room = asyncio.get_running_loop().create_future()

    async def send(message: object) -> None:
        if message == "waits":
            await room
        sent.append(message)

    assert send_now(send, "at once") is None  # type: ignore[arg-type]
    assert sent == ["at once"]
    rest = send_now(send, "waits")  # type: ignore[arg-type]
    assert rest is not None and sent == ["at once"]
    room.set_result(None)
    await rest
    assert sent == ["at once", "waits"]


async def test_a_cancel_while_the_rest_waits_reaches_the_send() -> None:
    seen: list[str] = []
    never = asyncio.get_running_loop().create_future()

    async def send(message: object) -> None:
        try:
            await never
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    rest = send_now(send, "waits")  # type: ignore[arg-type]
    assert rest is not None

    async def wait_for_rest() -> None:
        await rest

    task = asyncio.create_task(wait_for_rest())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert seen == ["cancelled"]
