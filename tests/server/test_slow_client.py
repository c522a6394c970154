"""A client that stops reading is cut off with a close code; nobody else notices."""

from __future__ import annotations

import asyncio
import socket

import httpx
import pytest
import websockets

from concordctl.server import EmbeddedServer, ServerConfig
from concordctl.server.hub import SLOW_CLIENT_CODE
from tests.helpers.timing import async_wait_until
from tests.server.helpers import general_id, login, watch

FRAME = '{"type": "bulk", "pad": "' + "x" * 16_000 + '"}'


@pytest.fixture(params=[True, False], ids=["direct-writes", "asgi-sends"])
def server_config(admin_password: str, db: str, request: pytest.FixtureRequest) -> ServerConfig:
    return ServerConfig(
        db_path=db,
        admin_password=admin_password,
        ws_queue_size=16,
        online_delay=60,
        direct_writes=request.param,
    )


def small_socket(port: int) -> socket.socket:
    """A client socket with a tiny receive buffer, so a non-reader backs up fast."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.setblocking(False)
    return sock


async def test_slow_client_is_disconnected_and_others_lose_nothing(
    server: EmbeddedServer, http: httpx.AsyncClient, admin_password: str
) -> None:
    admin = await login(http, "admin", admin_password)
    general = await general_id(admin)
    slow = await websockets.connect(
        f"{server.ws_url}?token={admin.token}", sock=small_socket(server.port), max_queue=1
    )
    try:
        async with watch(server, admin.token) as fast:
            sent = 0
            # Push until the hub gives up on the slow client; the fast one keeps up.
            while all(not s.closing for s in server.state.hub.subscribers):
                await server.broadcast_raw(FRAME)
                sent += 1
                # Paced by the fast reader, not the clock: it keeps up, the slow one backs up.
                await async_wait_until(lambda n=sent: fast.received["bulk"] >= n, what="reader")
                assert sent < 5000, "the slow client was never disconnected"
            chats = [await admin.send(general, f"after {i}") for i in range(20)]
            for _ in range(sent):
                assert (await fast.next())["type"] == "bulk"
            for chat in chats:
                assert (await fast.next("chat_sent"))["chat"] == chat
            # The slow client, reading at last, finds the reason at the end.
            with pytest.raises(websockets.ConnectionClosed):
                async with asyncio.timeout(15):
                    while True:
                        await slow.recv()
            assert slow.close_code == SLOW_CLIENT_CODE
            assert "slow" in (slow.close_reason or "")
    finally:
        await slow.close()


async def test_a_client_that_never_reads_is_dropped(
    admin_password: str,
) -> None:
    config = ServerConfig(
        admin_password=admin_password, ws_queue_size=4, ws_close_timeout=0.3, online_delay=60
    )
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        admin = await login(http, "admin", admin_password)
        stuck = await websockets.connect(
            f"{server.ws_url}?token={admin.token}", sock=small_socket(server.port), max_queue=1
        )
        try:
            async with watch(server, admin.token) as fast:
                sent = 0
                while server.connected_clients() == 2:
                    await server.broadcast_raw(FRAME)
                    sent += 1
                    # Paced by the fast reader, not the clock, as above.
                    await async_wait_until(lambda n=sent: fast.received["bulk"] >= n, what="reader")
                    assert sent < 5000, "the stuck client was never dropped"
                for _ in range(sent):
                    assert (await fast.next())["type"] == "bulk"
        finally:
            stuck.transport.abort()  # it is dead already: no closing handshake to wait for
