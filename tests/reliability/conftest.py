"""Fixtures shared by the fault tests: a FaultProxy in front of the server, a sender."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from faultproxy import FaultProxy
from streamcheck import Sender

from concordctl.server import EmbeddedServer


@pytest.fixture
async def proxy(server: EmbeddedServer) -> AsyncIterator[FaultProxy]:
    port = int(server.url.rsplit(":", 1)[1])
    async with FaultProxy(port) as running:
        yield running


@pytest.fixture
async def sender(server: EmbeddedServer, admin_password: str) -> AsyncIterator[Sender]:
    s = await Sender.login(server.url, "admin", admin_password, "general")
    yield s
    await s.aclose()
