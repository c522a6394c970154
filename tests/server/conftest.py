"""Fixtures of the server's tests: every test runs on SQLite and on PostgreSQL.

``db`` is the database a test's server uses: ``:memory:`` (SQLite) or a fresh
PostgreSQL database from ``postgres_url`` (skipped with a reason without
``CONCORD_TEST_POSTGRES``, a failure under CI). ``server_config`` (and a
module's override of it) takes its ``db_path`` from there, so the whole
server suite proves the backends behave the same.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from concordctl.server import EmbeddedServer, ServerConfig
from tests.helpers import TEST_PASSWORD_COST
from tests.server.helpers import User, login


@pytest.fixture(params=["sqlite", "postgres"])
def db(request: pytest.FixtureRequest) -> str:
    """The database of the test's server, one per backend."""
    if request.param == "postgres":
        url: str = request.getfixturevalue("postgres_url")
        return url
    return ":memory:"


@pytest.fixture
def server_config(admin_password: str, db: str) -> ServerConfig:
    return ServerConfig(
        host="127.0.0.1",
        port=0,
        db_path=db,
        admin_password=admin_password,
        online_delay=0.2,
        password_cost=TEST_PASSWORD_COST,
    )


@pytest.fixture
async def http(server: EmbeddedServer) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.url) as client:
        yield client


@pytest.fixture
async def admin(http: httpx.AsyncClient, admin_password: str) -> User:
    return await login(http, "admin", admin_password)
