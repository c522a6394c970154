"""Fixtures of the server's tests: an HTTP client on the server, the admin logged in."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from concordctl.server import EmbeddedServer
from tests.server.helpers import User, login


@pytest.fixture
async def http(server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, admin_password: str) -> User:
    return await login(http, "admin", admin_password)
