"""Who may change the server: admins (the seeded ``admin`` and those it promotes).

Issue 12 item 1: before roles, a user registered a second ago could delete
``general`` with everyone's chats.
"""

from __future__ import annotations

import httpx

from concordctl.server import EmbeddedServer, ServerConfig
from tests.server.helpers import User, general_id, register_and_login, watch


def assert_forbidden(response: httpx.Response, action: str) -> None:
    assert response.status_code == 403, response.text
    assert response.json()["message"] == f"only an admin may {action}"


async def test_a_new_user_cannot_delete_or_change_channels(
    server: EmbeddedServer, http: httpx.AsyncClient, admin: User
) -> None:
    general = await general_id(admin)
    chat = await admin.send(general, "keep me")
    mallory = await register_and_login(http, "mallory")
    assert_forbidden(await mallory.delete(f"/api/channels/{general}"), "delete channels")
    assert_forbidden(await mallory.post("/api/channels", json={"name": "x"}), "create channels")
    assert_forbidden(
        await mallory.patch(f"/api/channels/{general}", json={"name": "pwned"}), "edit channels"
    )
    assert_forbidden(await mallory.patch("/api/server", json={"name": "pwned"}), "edit the server")
    assert (await admin.get(f"/api/chats/{chat['id']}")).status_code == 200
    assert (await admin.get(f"/api/channels/{general}")).json()["name"] == "general"
    assert (await admin.get("/api/server")).json()["name"] == "My Concord Server"


async def test_admin_edits_the_server_and_channels(admin: User) -> None:
    edited = await admin.patch("/api/server", json={"description": "ours"})
    assert edited.status_code == 200
    assert edited.json()["description"] == "ours"
    assert edited.json()["name"] == "My Concord Server"
    assert (await admin.get("/api/server")).json()["description"] == "ours"
    general = await general_id(admin)
    channel = await admin.patch(f"/api/channels/{general}", json={"description": "talk"})
    assert channel.json()["description"] == "talk" and channel.json()["name"] == "general"
    assert (await admin.patch("/api/channels/12345", json={"name": "x"})).status_code == 404
    assert (await admin.patch(f"/api/channels/{general}", json={"name": " "})).status_code == 400


async def test_promote(server: EmbeddedServer, http: httpx.AsyncClient, admin: User) -> None:
    carol = await register_and_login(http, "carol")
    dave = await register_and_login(http, "dave")
    assert_forbidden(
        await carol.post("/api/admin/users/promote", json={"username": "dave"}), "promote users"
    )
    missing = await admin.post("/api/admin/users/promote", json={"username": "nobody"})
    assert missing.status_code == 404
    promoted = await admin.post("/api/admin/users/promote", json={"username": "CAROL"})
    assert promoted.status_code == 200
    assert promoted.json() == {"id": carol.id, "username": "carol", "admin": True}
    # the promotion applies to carol's existing token at once
    created = await carol.post("/api/channels", json={"name": "ops"})
    assert created.status_code == 200
    async with watch(server, admin.token) as a:
        assert (await carol.delete(f"/api/channels/{created.json()['id']}")).status_code == 200
        assert (await a.next("channel_deleted"))["channelId"] == created.json()["id"]
    assert (await dave.post("/api/channels", json={"name": "no"})).status_code == 403


async def test_open_channels_lets_anyone(db: str, admin_password: str) -> None:
    config = ServerConfig(db_path=db, admin_password=admin_password, open_channels=True)
    async with EmbeddedServer(config) as server, httpx.AsyncClient(base_url=server.url) as http:
        await _anyone_may_change_channels(http)


async def _anyone_may_change_channels(http: httpx.AsyncClient) -> None:
    bob = await register_and_login(http, "bob")
    created = await bob.post("/api/channels", json={"name": "bobs"})
    assert created.status_code == 200
    channel_id = created.json()["id"]
    assert (await bob.patch(f"/api/channels/{channel_id}", json={"name": "b2"})).status_code == 200
    assert (await bob.patch("/api/server", json={"name": "B"})).status_code == 200
    assert (await bob.delete(f"/api/channels/{channel_id}")).status_code == 200
    # promoting stays an admin's
    assert (await bob.post("/api/admin/users/promote", json={"username": "bob"})).status_code == 403
