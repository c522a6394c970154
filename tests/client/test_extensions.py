"""The server extensions the team agreed on: edit a channel or the server, promote, revoke.

``DELETE /tokens`` runs against the embedded server: today it answers 405 there
(only ``POST /tokens`` exists), which is exactly upstream's "not supported".
The other endpoints are stubbed with respx until the embedded server has them
(branch ``store``); then these tests switch to it.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator

import httpx
import pytest
import respx

from concordctl import Client, Forbidden, NotFound
from concordctl import protocol as p
from concordctl.rest import RestClient
from concordctl.server import EmbeddedServer

BASE = "http://127.0.0.1:9"
CHANNEL = {
    "id": 5,
    "parentChannelId": None,
    "ordinality": 0,
    "name": "ops",
    "description": "operations",
    "capabilities": None,
    "createdAt": 1,
    "createdByUserId": 1,
}
SERVER = {"name": "Concord", "description": "d", "iconId": None, "defaultChannelId": 5}


@pytest.fixture
def stub() -> Iterator[respx.MockRouter]:
    with respx.mock(base_url=BASE + "/api", assert_all_called=False) as router:
        yield router


def _body(route: respx.Route) -> object:
    return json.loads(route.calls.last.request.content)


async def test_edit_channel_sends_only_what_changes(stub: respx.MockRouter) -> None:
    renamed = {**CHANNEL, "name": "operations"}
    route = stub.patch("/channels/5").mock(return_value=httpx.Response(200, json=renamed))
    async with RestClient(BASE, token="a.b.c") as r:
        channel = await r.edit_channel(5, name="operations")
        assert isinstance(channel, p.Channel) and channel.name == "operations"
        assert _body(route) == {"name": "operations"}
        await r.edit_channel(5, description="")
        assert _body(route) == {"description": ""}
    assert route.calls.last.request.headers["authorization"] == "Bearer a.b.c"


async def test_edit_channel_maps_403_and_404(stub: respx.MockRouter) -> None:
    stub.patch("/channels/5").mock(
        return_value=httpx.Response(
            403, json={"path": "/", "status": 403, "error": "x", "message": "only an admin may"}
        )
    )
    stub.patch("/channels/6").mock(return_value=httpx.Response(404))
    async with RestClient(BASE, token="a.b.c") as r:
        with pytest.raises(Forbidden, match="only an admin may"):
            await r.edit_channel(5, name="x")
        with pytest.raises(NotFound):
            await r.edit_channel(6, name="x")


async def test_client_edit_channel_updates_the_name_cache(stub: respx.MockRouter) -> None:
    tree = [{**CHANNEL, "children": []}]
    stub.get("/channels").mock(return_value=httpx.Response(200, json=tree))
    stub.patch("/channels/5").mock(
        return_value=httpx.Response(200, json={**CHANNEL, "name": "operations"})
    )
    async with Client(BASE, token="a.b.c") as c:
        updated = await c.edit_channel("#ops", name="#operations")
        assert updated.name == "operations"
        assert await c.channel_name(5) == "operations"
        assert await c.channel_id("operations") == 5


async def test_edit_server(stub: respx.MockRouter) -> None:
    route = stub.patch("/server").mock(
        return_value=httpx.Response(200, json={**SERVER, "name": "Ops"})
    )
    async with Client(BASE, token="a.b.c") as c:
        server = await c.edit_server(name="Ops")
    assert server.name == "Ops" and _body(route) == {"name": "Ops"}


async def test_promote_user_by_name_or_id(stub: respx.MockRouter) -> None:
    promoted = {"id": 42, "username": "alice", "admin": True}
    route = stub.post("/admin/users/promote").mock(return_value=httpx.Response(200, json=promoted))
    stub.get("/users/42").mock(
        return_value=httpx.Response(
            200,
            json={
                "id": 42,
                "username": "alice",
                "profile": {"createdAt": 1, "nickname": "alice", "bio": None, "avatarId": None},
                "status": {"onlineStatus": "OFFLINE"},
            },
        )
    )
    async with Client(BASE, token="a.b.c") as c:
        result = await c.promote_user("@alice")
        assert result == p.PromotedUser(id=42, username="alice", admin=True)
        assert _body(route) == {"username": "alice"}
        await c.promote_user(42)
        assert _body(route) == {"username": "alice"}
    stub.post("/admin/users/promote").mock(return_value=httpx.Response(404))
    async with RestClient(BASE, token="a.b.c") as r:
        with pytest.raises(NotFound):
            await r.promote_user("nobody")


async def test_revoke_tokens_where_the_server_has_it(stub: respx.MockRouter) -> None:
    route = stub.delete("/tokens").mock(return_value=httpx.Response(200))
    async with RestClient(BASE, token="a.b.c") as r:
        assert await r.revoke_tokens() is True
        assert r.token is None  # forgotten: it no longer works
    assert route.call_count == 1


@pytest.mark.parametrize("status", [404, 405])
async def test_revoke_tokens_unsupported_on_a_server_without_it(
    stub: respx.MockRouter, status: int
) -> None:
    # Upstream Concord has no DELETE /api/tokens: a real server cannot produce this here.
    stub.delete("/tokens").mock(return_value=httpx.Response(status))
    async with RestClient(BASE, token="a.b.c") as r:
        assert await r.revoke_tokens() is False
        assert r.token == "a.b.c"


async def test_revoke_tokens_retires_every_token_of_the_caller(
    server: EmbeddedServer, admin_password: str
) -> None:
    async with Client(server.url, username="admin", password=admin_password) as c:
        token = c.token
        assert token is not None
        assert await c.revoke_tokens() is True
    async with httpx.AsyncClient(base_url=server.url) as http:
        gone = await http.get("/api/self", headers={"Authorization": f"Bearer {token}"})
    assert gone.status_code == 401


async def test_revoke_tokens_other_errors_are_raised(stub: respx.MockRouter) -> None:
    stub.delete("/tokens").mock(return_value=httpx.Response(403))
    async with RestClient(BASE, token="a.b.c") as r:
        with pytest.raises(Forbidden):
            await r.revoke_tokens()
        assert r.token == "a.b.c"


def test_importing_the_client_does_not_import_websockets() -> None:
    code = (
        "import sys\n"
        "from concordctl import Client, StreamState\n"
        "import concordctl.client\n"
        "assert StreamState('connected').state == 'connected'\n"
        "print(sorted(m for m in ('websockets', 'httpx') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
