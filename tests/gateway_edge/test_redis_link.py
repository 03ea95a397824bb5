"""The limits' Redis client (gateway_edge/redis_link.py): against the machine's Redis, and
against small servers that answer wrongly or not at all."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import hiredis
import pytest

from gateway_edge.redis_link import RedisError, RedisLink

REDIS_URL = "redis://127.0.0.1:6379/12"


@pytest.fixture
async def link() -> AsyncIterator[RedisLink]:
    connected = RedisLink(REDIS_URL)
    yield connected
    await connected.close()


async def test_calls_made_together_are_answered_in_order(link: RedisLink) -> None:
    await link.call("DEL", "link-test")
    replies = await asyncio.gather(*(link.call("INCR", "link-test") for _ in range(50)))
    assert sorted(replies) == list(range(1, 51))
    assert await link.call("GET", "link-test") == b"50"


async def test_an_error_reply_raises_and_the_link_goes_on(link: RedisLink) -> None:
    with pytest.raises(RedisError, match="unknown command"):
        await link.call("NO-SUCH-COMMAND")
    assert await link.call("PING") == b"PONG"


async def test_a_script_redis_forgot_is_loaded_again(link: RedisLink) -> None:
    script = "return tonumber(ARGV[1]) * 2"
    assert await link.run_script(script, [], [21]) == 42
    await link.call("SCRIPT", "FLUSH")  # as after a restart of Redis
    assert await link.run_script(script, [], [4]) == 8


async def serve(
    answer: Callable[[list[bytes]], bytes | None],
) -> tuple[asyncio.Server, list[list[list[bytes]]]]:
    """A server that reads commands and answers each with `answer` (None: stays silent)."""
    connections: list[list[list[bytes]]] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        commands: list[list[bytes]] = []
        connections.append(commands)
        parser = hiredis.Reader()
        while data := await reader.read(65536):
            parser.feed(data)
            while (command := parser.gets()) is not False:
                commands.append(command)
                reply = answer(command)
                if reply is not None:
                    writer.write(reply)
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, connections


async def test_the_user_password_and_database_go_first() -> None:
    server, connections = await serve(lambda command: b"+OK\r\n" if command else None)
    port = server.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://ann:s%40cret@127.0.0.1:{port}/3")
    try:
        assert await link.call("PING") == b"OK"
    finally:
        await link.close()
        server.close()
    assert connections[0] == [[b"AUTH", b"ann", b"s@cret"], [b"SELECT", b"3"], [b"PING"]]


async def test_a_silent_server_times_out_and_the_next_call_connects_anew() -> None:
    server, connections = await serve(lambda command: None)
    port = server.sockets[0].getsockname()[1]
    link = RedisLink(f"redis://127.0.0.1:{port}/0", timeout_seconds=0.2)
    try:
        started = asyncio.get_running_loop().time()
        with pytest.raises(RedisError, match="no answer within 0.2 s"):
            await link.call("PING")
        assert asyncio.get_running_loop().time() - started < 1
        with pytest.raises(RedisError):
            await link.call("PING")
    finally:
        await link.close()
        server.close()
    assert len(connections) == 2


async def test_nothing_listening_is_a_redis_error() -> None:
    link = RedisLink("redis://127.0.0.1:1/0")
    with pytest.raises(RedisError):
        await link.call("PING")
