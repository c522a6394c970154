"""The contract checks (``test_rest.py``, ``test_websocket.py``) against every node
of a three-node server on one PostgreSQL database.

Each test of those modules runs here once, against one node of the three with
the two others running: the nodes run the same code, so the tests are dealt
out to node 0, 1 and 2 in turn (by name, so a test always meets the same
node), and every node answers a third of the contract. Whatever node a load
balancer picks, it answers as the contract says; that what one node does
reaches the clients of the others is ``test_nodes.py``'s.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from concordctl.server import EmbeddedServer, ServerConfig
from tests.server import test_rest, test_websocket
from tests.server.helpers import running_nodes

# The same test functions, collected again in this module with its fixtures.
_TESTS: dict[str, Any] = {
    name: test
    for module in (test_rest, test_websocket)
    for name, test in vars(module).items()
    if name.startswith("test_") and callable(test)
}
globals().update(_TESTS)
_NODE_OF = {name: i % 3 for i, name in enumerate(sorted(_TESTS))}


@pytest.fixture
def db(postgres_url: str) -> str:
    """Every node on the one PostgreSQL database (no SQLite run here)."""
    return postgres_url


@pytest.fixture
async def server(
    request: pytest.FixtureRequest, postgres_url: str, admin_password: str
) -> AsyncIterator[EmbeddedServer]:
    config = ServerConfig(db_path=postgres_url, admin_password=admin_password, online_delay=0.2)
    async with running_nodes([config] * 3) as nodes:
        yield nodes[_NODE_OF[request.node.originalname]]


def test_the_tests_are_dealt_to_every_node() -> None:
    assert sorted(set(_NODE_OF.values())) == [0, 1, 2]
    counts = [list(_NODE_OF.values()).count(n) for n in (0, 1, 2)]
    assert max(counts) - min(counts) <= 1, counts
