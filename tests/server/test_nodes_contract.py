"""The contract checks (``test_rest.py``, ``test_websocket.py``) against every node
of a three-node server on one PostgreSQL database.

Each test of those modules runs here three times, once per node, with the two
other nodes running too: whatever node a load balancer picks, it answers as
the contract says.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest

from concordctl.server import EmbeddedServer, ServerConfig
from tests.server import test_rest, test_websocket

# The same test functions, collected again in this module with its fixtures.
globals().update(
    {
        name: test
        for module in (test_rest, test_websocket)
        for name, test in vars(module).items()
        if name.startswith("test_") and callable(test)
    }
)


@pytest.fixture
def db(postgres_url: str) -> str:
    """Every node on the one PostgreSQL database (no SQLite run here)."""
    return postgres_url


@pytest.fixture(params=[0, 1, 2], ids=["node0", "node1", "node2"])
async def server(
    request: pytest.FixtureRequest, postgres_url: str, admin_password: str
) -> AsyncIterator[EmbeddedServer]:
    async with contextlib.AsyncExitStack() as stack:
        nodes = [
            await stack.enter_async_context(
                EmbeddedServer(
                    ServerConfig(
                        db_path=postgres_url, admin_password=admin_password, online_delay=0.2
                    )
                )
            )
            for _ in range(3)
        ]
        yield nodes[request.param]
