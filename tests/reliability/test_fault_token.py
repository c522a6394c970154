"""client.events() when the token expires during an outage: the reconnect
renews it (a 401 handshake, then a fresh login) and recovery still works."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faultproxy import FaultProxy
from streamcheck import FAST, Collector, Sender, poll_until

from concordctl import Client
from concordctl.server import EmbeddedServer, ServerConfig


@pytest.fixture
async def client(proxy: FaultProxy, admin_password: str) -> AsyncIterator[Client]:
    async with Client(
        proxy.url, username="admin", password=admin_password, config_path="/nonexistent"
    ) as c:
        yield c


@pytest.fixture
def server_config(admin_password: str) -> ServerConfig:
    # Tokens that expire during an outage (overrides tests/conftest.py).
    return ServerConfig(admin_password=admin_password, token_seconds=2.0, online_delay=0.2)


async def test_token_expired_during_the_outage_is_renewed(
    client: Client, proxy: FaultProxy, admin_password: str, server: EmbeddedServer
) -> None:
    collector = Collector()
    collector.start(client.events(on_state=collector.on_state, **FAST))
    await collector.wait_for(lambda: "connected" in collector.state_names(), 10, "connect")
    sender = await Sender.login(server.url, "admin", admin_password, "general")
    try:
        await collector.wait_for(collector.has_chats(await sender.send_many("a", 1)), 10, "live")
        await proxy.refuse(3.0)  # longer than the token lives
        await proxy.cut()
        missed = [await sender.send("while-expired")]
        # Until the stream's token has expired (the server's 2 s, during the outage).
        await poll_until(lambda: client.rest.tokens.expired(), 5, "the token expiring")
        sender = await Sender.login(server.url, "admin", admin_password, "general")
        missed += await sender.send_many("fresh", 2)
        await collector.wait_for(collector.has_chats(missed), 15, "recovery with a new token")
    finally:
        await sender.aclose()
        await collector.stop()
    assert collector.error is None
