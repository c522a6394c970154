"""The fault proxy itself: it forwards faithfully, and each fault does what it says."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
from faultproxy import FaultProxy

from tests.helpers.timing import async_wait_until


async def _echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(65536):
            writer.write(data)
            await writer.drain()
    writer.close()


@pytest.fixture
async def echo_proxy() -> AsyncIterator[FaultProxy]:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with FaultProxy(port) as proxy:
        yield proxy
    server.close()


async def _connect(proxy: FaultProxy) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", proxy.port)


async def _roundtrip(proxy: FaultProxy, payload: bytes = b"ping") -> bytes:
    reader, writer = await _connect(proxy)
    try:
        writer.write(payload)
        await writer.drain()
        return await asyncio.wait_for(reader.readexactly(len(payload)), 5)
    finally:
        writer.close()


async def test_forwards_a_megabyte_both_ways_intact(echo_proxy: FaultProxy) -> None:
    payload = bytes(range(256)) * 4096
    assert await _roundtrip(echo_proxy, payload) == payload
    assert echo_proxy.bytes_forwarded == {"up": len(payload), "down": len(payload)}


async def test_cut_resets_every_live_connection_and_new_ones_work(
    echo_proxy: FaultProxy,
) -> None:
    conns = [await _connect(echo_proxy) for _ in range(3)]
    await async_wait_until(lambda: echo_proxy.live_connections == 3, what="3 links")
    assert await echo_proxy.cut() == 3
    for reader, writer in conns:
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()
    assert echo_proxy.live_connections == 0
    assert await _roundtrip(echo_proxy) == b"ping"


async def test_stall_holds_data_without_closing_and_resume_delivers_it(
    echo_proxy: FaultProxy,
) -> None:
    reader, writer = await _connect(echo_proxy)
    writer.write(b"a")
    assert await asyncio.wait_for(reader.readexactly(1), 5) == b"a"
    echo_proxy.stall()
    writer.write(b"held")
    await writer.drain()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(reader.readexactly(4), 0.3)
    assert not reader.at_eof() and echo_proxy.live_connections == 1
    echo_proxy.resume()
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"held"
    writer.close()


async def test_stall_stalls_new_connections_too_unless_existing_only(
    echo_proxy: FaultProxy,
) -> None:
    echo_proxy.stall()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(_roundtrip(echo_proxy), 0.3)
    echo_proxy.resume()

    old_reader, old_writer = await _connect(echo_proxy)
    old_writer.write(b"1")  # the old connection is joined and flowing before the stall
    assert await asyncio.wait_for(old_reader.readexactly(1), 5) == b"1"
    echo_proxy.stall(existing_only=True)
    assert await _roundtrip(echo_proxy, b"new") == b"new"  # a new connection flows
    old_writer.write(b"old")
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(old_reader.readexactly(3), 0.3)
    old_writer.close()


async def test_drop_bytes_removes_bytes_from_the_middle_once(echo_proxy: FaultProxy) -> None:
    reader, writer = await _connect(echo_proxy)
    payload = bytes(range(200))
    echo_proxy.drop_bytes(10, direction="up")
    writer.write(payload)
    await writer.drain()
    got = await asyncio.wait_for(reader.readexactly(190), 5)
    assert got == payload[:100] + payload[110:]
    writer.write(b"next")  # later chunks pass untouched
    assert await asyncio.wait_for(reader.readexactly(4), 5) == b"next"
    writer.close()


async def test_corrupt_bytes_overwrites_without_changing_the_length(
    echo_proxy: FaultProxy,
) -> None:
    reader, writer = await _connect(echo_proxy)
    echo_proxy.corrupt_bytes(3, direction="down")
    writer.write(b"abcdefghij")
    assert await asyncio.wait_for(reader.readexactly(10), 5) == b"abcde###ij"
    writer.close()


async def test_cut_mid_response_forwards_a_prefix_then_resets(echo_proxy: FaultProxy) -> None:
    reader, writer = await _connect(echo_proxy)
    echo_proxy.cut_mid_response(keep=5)
    writer.write(b"0123456789")
    await writer.drain()
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(100), 5):
            got += chunk
    assert got == b"01234"
    writer.close()
    assert await _roundtrip(echo_proxy) == b"ping"


async def test_refuse_then_listen_again_on_the_same_port(echo_proxy: FaultProxy) -> None:
    port = echo_proxy.port
    await echo_proxy.refuse(0.5)
    with pytest.raises(ConnectionRefusedError):
        await _connect(echo_proxy)
    await async_wait_until(lambda: echo_proxy.listening, what="listening again on its own")
    assert echo_proxy.port == port
    assert await _roundtrip(echo_proxy) == b"ping"
    await echo_proxy.refuse(30)
    await echo_proxy.accept_again()
    assert await _roundtrip(echo_proxy) == b"ping"


async def test_upstream_down_resets_the_client() -> None:
    server = await asyncio.start_server(_echo, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    async with FaultProxy(port) as proxy:
        reader, writer = await _connect(proxy)
        with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 5)
        writer.close()


async def test_close_ends_every_connection(echo_proxy: FaultProxy) -> None:
    reader, writer = await _connect(echo_proxy)
    await async_wait_until(lambda: echo_proxy.live_connections == 1, what="the link")
    echo_proxy.stall()
    await echo_proxy.close()
    with pytest.raises((ConnectionResetError, asyncio.IncompleteReadError)):
        await asyncio.wait_for(reader.readexactly(1), 5)
    writer.close()
    with pytest.raises(OSError):
        await _connect(echo_proxy)


async def test_cut_mid_response_to_a_chosen_request(echo_proxy: FaultProxy) -> None:
    reader, writer = await _connect(echo_proxy)
    echo_proxy.cut_mid_response(keep=3, request=b"POST ")
    writer.write(b"GET /a")  # not the chosen request: answered whole
    assert await asyncio.wait_for(reader.readexactly(6), 5) == b"GET /a"
    writer.write(b"POST /b")
    got = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := await asyncio.wait_for(reader.read(100), 5):
            got += chunk
    assert got == b"POS"
    writer.close()
