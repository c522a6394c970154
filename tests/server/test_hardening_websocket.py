"""Websocket floods: pings that are never read, and client frames by the
thousand (issue 12, items 2 and 3). The flooder pays, nobody else."""

from __future__ import annotations

import asyncio
import json
import logging
import socket

import httpx
import pytest
from websockets.client import ClientProtocol
from websockets.frames import Frame, Opcode
from websockets.http11 import Response
from websockets.uri import parse_uri

from concordctl.server import EmbeddedServer, ServerConfig
from concordctl.server.hub import SLOW_CLIENT_CODE
from concordctl.server.websocket import FLOOD_CODE
from tests.helpers.timing import UNIT, async_wait_until
from tests.server.helpers import general_id, login, register_and_login, watch


@pytest.fixture
def server_config(admin_password: str) -> ServerConfig:
    return ServerConfig(
        admin_password=admin_password,
        online_delay=60,
        ws_queue_size=64,
        ws_buffer_bytes=256 * 1024,
        ws_close_timeout=0.3,
        # Slow refill: a test that finds the budget spent is not raced by the refill.
        ws_frames_per_second=0.2,
    )


class RawSocket:
    """A websocket client over asyncio streams that writes what it is told and
    reads nothing after the handshake (its buffers fill, then TCP pushes back)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.proto: ClientProtocol | None = None

    @classmethod
    async def open(cls, server: EmbeddedServer, token: str) -> RawSocket:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=4096)
        raw = cls(reader, writer)
        proto = ClientProtocol(parse_uri(f"{server.ws_url}?token={token}"))
        proto.send_request(proto.connect())
        writer.write(b"".join(proto.data_to_send()))
        async with asyncio.timeout(5 * UNIT):
            while not any(isinstance(e, Response) for e in proto.events_received()):
                proto.receive_data(await reader.read(4096))
        raw.proto = proto
        return raw

    def frame(self, opcode: Opcode, payload: bytes) -> bytes:
        assert self.proto is not None
        self.proto.send_frame(Frame(opcode, payload))
        return b"".join(self.proto.data_to_send())

    async def write(self, data: bytes) -> bool:
        """False once the server stopped taking what we write."""
        self.writer.write(data)
        try:
            async with asyncio.timeout(0.2 * UNIT):
                await self.writer.drain()
        except (TimeoutError, ConnectionError):
            return False
        return True

    def close(self) -> None:
        self.writer.transport.abort()


async def test_a_ping_flood_that_never_reads_is_closed_as_a_slow_reader(
    server: EmbeddedServer,
    http: httpx.AsyncClient,
    admin_password: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    admin = await login(http, "admin", admin_password)
    general = await general_id(admin)
    limit = server.config.ws_buffer_bytes
    caplog.set_level(logging.WARNING, "concordctl.server")
    async with watch(server, admin.token) as healthy:
        flooder = await RawSocket.open(server, admin.token)
        await async_wait_until(lambda: server.connected_clients() == 2, what="both connected")
        flooding = [s for s in server.state.hub.subscribers if s._direct is not None]
        try:
            pings = flooder.frame(Opcode.PING, b"p" * 125) * 1000  # 127 KB of pongs to come
            sent = 0
            # 200 MB of pongs would be the old unbounded growth; the limit is 256 KB.
            while server.connected_clients() == 2 and sent < 1500:
                if not await flooder.write(pings):
                    await asyncio.sleep(0)  # a yield: the server's side runs meanwhile
                sent += 1
            await async_wait_until(
                lambda: server.connected_clients() == 1, timeout=5 * UNIT, what="flooder dropped"
            )
            assert sent < 1500, "the ping flood was never cut off"
            # Never more than the limit (and one pong) was buffered for it.
            for sub in flooding:
                assert sub._direct is not None
                assert sub._direct._transport.get_write_buffer_size() <= limit + 200
        finally:
            flooder.close()
        assert any("does not read" in r.getMessage() for r in caplog.records)
        chat = await admin.send(general, "still here")
        assert (await healthy.next("chat_sent"))["chat"] == chat
        assert not healthy.closed.done()


async def test_a_ping_flood_gets_the_slow_reader_close_code_when_it_reads_at_last(
    admin_password: str,
) -> None:
    config = ServerConfig(
        admin_password=admin_password,
        online_delay=60,
        ws_buffer_bytes=256 * 1024,
        ws_close_timeout=10 * UNIT,
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        admin = await login(http, "admin", admin_password)
        flooder = await RawSocket.open(server, admin.token)
        await async_wait_until(lambda: server.connected_clients() == 1, what="connected")
        try:
            pings = flooder.frame(Opcode.PING, b"p" * 125) * 1000
            # Flood only until the server gives up, then read everything it sent.
            for _ in range(1500):
                if server.connected_clients() == 0:
                    break
                await flooder.write(pings)
            assert server.connected_clients() == 0, "the ping flood was never cut off"
            assert flooder.proto is not None
            code = None
            async with asyncio.timeout(10 * UNIT):
                while code is None:
                    data = await flooder.reader.read(65536)
                    assert data, "closed without a close frame"
                    flooder.proto.receive_data(data)
                    for event in flooder.proto.events_received():
                        if isinstance(event, Frame) and event.opcode is Opcode.CLOSE:
                            code = int.from_bytes(event.data[:2], "big")
            assert code == SLOW_CLIENT_CODE
        finally:
            flooder.close()


async def _flood(ws: object, frames: list[str]) -> None:
    send = ws.send  # type: ignore[attr-defined]
    for frame in frames:
        await send(frame)


async def test_a_typing_flood_disconnects_nobody_and_is_coalesced(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str
) -> None:
    admin = await login(http, "admin", admin_password)
    general = await general_id(admin)
    mallory = await register_and_login(http, "mallory")
    typing = json.dumps({"type": "chat_typing", "channelId": general, "threadId": None})
    async with (
        watch(server, admin.token) as reader_a,
        watch(server, admin.token) as reader_b,
        watch(server, mallory.token) as flooder,
    ):
        loop = asyncio.get_running_loop()
        started = loop.time()
        await _flood(flooder.ws, [typing] * 3000)
        chat = await admin.send(general, "after the flood")
        for reader in (reader_a, reader_b):
            seen = []
            while True:
                frame = await reader.next()
                if frame["type"] == "chat_sent":
                    assert frame["chat"] == chat
                    break
                if frame["type"] == "chat_typing":
                    seen.append(frame)
            elapsed = loop.time() - started
            # A few per second per channel, the first at once.
            assert 1 <= len(seen) <= 2 + 2 * elapsed, (len(seen), elapsed)
            assert not reader.closed.done()
        # The latest held-back typing still arrives (coalesced, not lost).
        assert (await reader_a.next("chat_typing", timeout=3 * UNIT))["userId"] == mallory.id
        # The flooder, having dropped past the limit, was closed with 1008.
        code, _ = await asyncio.wait_for(flooder.closed, 5 * UNIT)
        assert code == FLOOD_CODE
        assert not reader_a.closed.done() and not reader_b.closed.done()


async def test_a_chat_written_flood_is_held_to_the_budget_and_the_sender_pays(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str
) -> None:
    admin = await login(http, "admin", admin_password)
    general = await general_id(admin)
    mallory = await register_and_login(http, "mallory")
    config = server.config
    async with watch(server, admin.token) as reader, watch(server, mallory.token) as flooder:
        loop = asyncio.get_running_loop()
        started = loop.time()
        frames = [
            json.dumps(
                {"type": "chat_written", "channelId": general, "threadId": None, "content": f"{i}"}
            )
            for i in range(2000)
        ]
        await _flood(flooder.ws, frames)
        code, reason = await asyncio.wait_for(flooder.closed, 5 * UNIT)
        assert code == FLOOD_CODE and "too many frames" in (reason or "")
        elapsed = loop.time() - started
        stored = (await admin.get(f"/api/channels/{general}/chats/latest?limit=1000")).json()
        allowed = config.ws_frame_burst + config.ws_frames_per_second * elapsed + 1
        assert 1 <= len(stored) <= allowed, (len(stored), elapsed)
        # Every chat that was stored reached the reader, which is still connected.
        for _ in stored:
            assert (await reader.next("chat_sent"))["chat"]["authorId"] == mallory.id
        assert not reader.closed.done()
        # Reactions share the budget, per user: a fresh socket of mallory's has none left.
        chat_id = stored[0]["id"]
        reaction = {"type": "chat_reaction", "chatId": chat_id, "reaction": "x", "adding": True}
        async with watch(server, mallory.token) as again:
            await again.send(reaction)
            # Frames of a socket are handled in order: once its typing is echoed, the
            # reaction before it was handled (dropped).
            await again.send({"type": "chat_typing", "channelId": general, "threadId": None})
            await again.next("chat_typing")
            chat = await server.store.chat(chat_id)
            assert chat is not None and chat.reactions == {}

            # The refill, without waiting for it: the budget's clock moves on by
            # the time one frame takes to come back (1 / ws_frames_per_second).
            budget = server.state.limits.frames
            real_clock, later = budget.clock, 1 / config.ws_frames_per_second
            budget.clock = lambda: real_clock() + later

            async def refilled() -> bool:
                await again.send(reaction)
                chat = await server.store.chat(chat_id)
                return chat is not None and bool(chat.reactions)

            await async_wait_until(refilled, timeout=5 * UNIT, what="the budget to refill")


async def test_readers_of_a_heavy_but_legal_burst_are_not_called_slow(
    admin_password: str,
) -> None:
    # Many users each within their budget, all in one loop iteration: the readers'
    # sockets take writes, so their queues are written out, not cut off with 4008.
    config = ServerConfig(admin_password=admin_password, online_delay=60, ws_queue_size=16)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        admin = await login(http, "admin", admin_password)
        general = await general_id(admin)
        async with watch(server, admin.token) as reader:
            for i in range(5):
                for j in range(100):
                    server.state.hub.broadcast(json.dumps({"type": "bulk", "n": i * 100 + j}))
                await asyncio.sleep(0)  # the scenario: each burst is one loop iteration
            got = [await reader.next("bulk") for _ in range(500)]
            assert [f["n"] for f in got] == list(range(500))
            chat = await admin.send(general, "fine")
            assert (await reader.next("chat_sent"))["chat"] == chat
            assert not reader.closed.done()
