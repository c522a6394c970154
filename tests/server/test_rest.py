"""Every REST endpoint and status code of the contract, over a real socket."""

from __future__ import annotations

import httpx

from concordctl.protocol import Channel, Chat, FullChannel, FullUser, Reactions, Server, decode
from tests.server.helpers import User, general_id, login, register_and_login

PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 32


def assert_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["status"] == status
    assert body["path"] == response.request.url.path
    assert isinstance(body["error"], str) and body["error"]
    assert "message" in body


async def test_tokens_login_and_bad_credentials(http: httpx.AsyncClient, admin: User) -> None:
    bad = await http.post("/api/tokens", json={"username": "admin", "password": "wrong"})
    assert_error(bad, 400)
    unknown = await http.post("/api/tokens", json={"username": "nobody", "password": "x"})
    assert_error(unknown, 400)
    recycled = await admin.get("/api/tokens/recycle")
    assert recycled.status_code == 200
    fresh = User(http, recycled.json()["token"], "admin")
    assert (await fresh.get("/api/self")).json()["username"] == "admin"


async def test_unauthenticated_gets_401_with_empty_body(http: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/self"),
        ("GET", "/api/tokens/recycle"),
        ("GET", "/api/users"),
        ("GET", "/api/channels"),
        ("POST", "/api/channels"),
        ("GET", "/api/chats"),
        ("GET", "/api/server"),
        ("DELETE", "/api/chats/1"),
    ]:
        response = await http.request(method, path)
        assert response.status_code == 401, (method, path)
        assert response.content == b""
        assert response.headers["www-authenticate"] == 'Basic realm="Realm"'
    for header in ["Bearer nonsense", "Bearer a.b.c", "Basic YWRtaW46eA==", "Bearer"]:
        response = await http.get("/api/self", headers={"Authorization": header})
        assert response.status_code == 401, header


async def test_register_then_username_taken(http: httpx.AsyncClient, admin: User) -> None:
    created = await http.post("/api/users/register", json={"username": "bob", "password": "pw1"})
    assert created.status_code == 200
    body = created.json()
    assert body["username"] == "bob" and body["id"] > 2**50
    taken = await http.post("/api/users/register", json={"username": "bob", "password": "x"})
    assert_error(taken, 400)
    look_alike = await http.post("/api/users/register", json={"username": "BOB", "password": "x"})
    assert_error(look_alike, 400)  # unique regardless of case
    assert (await login(http, "Bob", "pw1")).name == "Bob"
    users = decode((await admin.get("/api/users")).content, list[FullUser])
    assert {u.username for u in users} == {"admin", "bob"}
    bob = decode((await admin.get(f"/api/users/{body['id']}")).content, FullUser)
    assert bob.username == "bob" and bob.status.online_status == "OFFLINE"
    assert bob.profile.nickname == "bob" and bob.profile.avatar_id is None
    assert_error(await admin.get("/api/users/12345"), 404)


async def test_self_password_change(http: httpx.AsyncClient) -> None:
    carol = await register_and_login(http, "carol", "old-password")
    changed = await carol.post("/api/self/password", json={"newPassword": "new-password"})
    assert changed.status_code == 200 and changed.content == b""
    assert_error(
        await http.post("/api/tokens", json={"username": "carol", "password": "old-password"}),
        400,
    )
    await login(http, "carol", "new-password")


async def test_avatar_and_images(http: httpx.AsyncClient, admin: User) -> None:
    refused = await admin.post(
        "/api/self/avatar", content=b"hello", headers={"Content-Type": "text/plain"}
    )
    assert_error(refused, 415)
    response = await admin.post(
        "/api/self/avatar", content=PNG, headers={"Content-Type": "image/png"}
    )
    assert response.status_code == 200
    user = decode(response.content, FullUser)
    assert user.profile.avatar_id is not None
    image = await admin.get(f"/api/images/{user.profile.avatar_id}")
    assert image.status_code == 200
    assert image.content == PNG and image.headers["content-type"] == "image/png"
    assert_error(await admin.get("/api/images/42"), 404)


async def test_server_info(admin: User) -> None:
    info = decode((await admin.get("/api/server")).content, Server)
    assert info.name == "My Concord Server"
    assert info.description == (
        "This is my Concord server. Edit this description to say something cool!"
    )
    assert info.icon_id is not None and info.default_channel_id is not None
    icon = await admin.get(f"/api/images/{info.icon_id}")
    assert icon.status_code == 200 and icon.headers["content-type"] == "image/png"
    assert icon.content.startswith(b"\x89PNG\r\n\x1a\n") and len(icon.content) > 100
    general = decode((await admin.get(f"/api/channels/{info.default_channel_id}")).content, Channel)
    assert general.name == "general" and general.capabilities == ["text"]
    assert general.parent_channel_id is None


async def test_channels_tree_create_and_delete(admin: User) -> None:
    root = decode(
        (await admin.post("/api/channels", json={"name": "dev", "description": "d"})).content,
        Channel,
    )
    assert root.capabilities is None and root.description == "d" and root.ordinality == 1
    child = decode(
        (
            await admin.post(
                "/api/channels",
                json={"name": "ci", "parentChannelId": root.id, "capabilities": ["text"]},
            )
        ).content,
        Channel,
    )
    assert child.parent_channel_id == root.id and child.ordinality == 0
    first = decode(
        (await admin.post("/api/channels", json={"name": "top", "ordinality": 0})).content,
        Channel,
    )
    assert first.ordinality == 0
    tree = decode((await admin.get("/api/channels")).content, list[FullChannel])
    assert [c.name for c in tree] == ["top", "general", "dev"]
    assert [c.ordinality for c in tree] == [0, 1, 2]
    assert [c.name for c in tree[2].children] == ["ci"]
    chat = await admin.send(child.id, "in ci")
    deleted = await admin.delete(f"/api/channels/{root.id}")
    assert deleted.status_code == 200 and deleted.content == b""
    assert_error(await admin.get(f"/api/channels/{child.id}"), 404)
    assert_error(await admin.get(f"/api/chats/{chat['id']}"), 404)
    assert_error(await admin.delete(f"/api/channels/{root.id}"), 404)
    assert_error(await admin.get("/api/channels/77"), 404)
    assert_error(await admin.post("/api/channels", json={"name": "x", "parentChannelId": 5}), 400)


async def test_chat_lifecycle(http: httpx.AsyncClient, admin: User) -> None:
    general = await general_id(admin)
    chat = decode(
        (await admin.post(f"/api/channels/{general}/chats", json={"content": "hi"})).content, Chat
    )
    assert chat.channel_id == general and chat.author_id == admin.id
    assert chat.thread_id is None and not chat.edited and chat.reactions == {}
    dated = await admin.send(general, "dated", sentAt=1234)
    assert dated["createdAt"] == 1234
    reply = await admin.send(general, "in thread", threadId=chat.id)
    assert reply["threadId"] == chat.id  # upstream drops it; we honour it
    assert decode((await admin.get(f"/api/chats/{chat.id}")).content, Chat) == chat
    edited = await admin.patch(f"/api/chats/{chat.id}", json={"content": "hello"})
    assert edited.status_code == 200
    assert edited.json()["edited"] is True and edited.json()["content"] == "hello"
    assert_error(await admin.patch("/api/chats/99", json={"content": "x"}), 404)
    assert_error(
        await admin.post("/api/channels/99/chats", json={"content": "x"}), 400
    )  # unknown channel: 400 as upstream means it
    mallory = await register_and_login(http, "mallory")
    assert_error(await mallory.patch(f"/api/chats/{chat.id}", json={"content": "pwned"}), 403)
    assert_error(await mallory.delete(f"/api/chats/{chat.id}"), 403)
    gone = await admin.delete(f"/api/chats/{chat.id}")
    assert gone.status_code == 200 and gone.content == b""
    assert_error(await admin.get(f"/api/chats/{chat.id}"), 404)
    assert_error(await admin.delete(f"/api/chats/{chat.id}"), 404)


async def test_latest_is_newest_first_and_sized(admin: User) -> None:
    general = await general_id(admin)
    sent = [await admin.send(general, f"n{i}", sentAt=1000 + i) for i in range(5)]
    latest = (await admin.get(f"/api/channels/{general}/chats/latest", params={"size": 3})).json()
    assert [c["id"] for c in latest] == [c["id"] for c in reversed(sent)][:3]
    default = (await admin.get(f"/api/channels/{general}/chats/latest")).json()
    assert len(default) == 5
    assert_error(await admin.get("/api/channels/99/chats/latest"), 404)


async def test_search_every_parameter(http: httpx.AsyncClient, admin: User) -> None:
    general = await general_id(admin)
    other = (await admin.post("/api/channels", json={"name": "other"})).json()["id"]
    dave = await register_and_login(http, "dave")
    a = await admin.send(general, "deploy started", sentAt=100)
    b = await dave.send(general, "Deploy finished OK", sentAt=200)
    c = await admin.send(other, "lunch?", sentAt=300)
    d = await dave.send(general, "thread reply", sentAt=400, threadId=a["id"])

    async def ids(**params: object) -> list[int]:
        response = await admin.get("/api/chats", params=params)
        assert response.status_code == 200, response.text
        return [chat["id"] for chat in response.json()]

    assert await ids() == [d["id"], c["id"], b["id"], a["id"]]
    assert await ids(authorId=dave.id) == [d["id"], b["id"]]
    assert await ids(channelId=other) == [c["id"]]
    assert await ids(threadId=a["id"]) == [d["id"]]
    assert await ids(threadId=-1, channelId=general) == [b["id"], a["id"]]
    assert await ids(before=300) == [b["id"], a["id"]]
    assert await ids(after=200) == [d["id"], c["id"]]
    assert await ids(before=400, after=100) == [c["id"], b["id"]]
    assert await ids(query="deploy") == [b["id"], a["id"]]
    assert await ids(query="lunch finished") == []  # every word must match
    assert await ids(query="finished deploy") == [b["id"]]
    assert await ids(query='"deploy finished"') == [b["id"]]  # a phrase
    assert await ids(query='"finished deploy"') == []  # ...in that order
    assert await ids(query='"Deploy" ok') == [b["id"]]
    assert await ids(query="DÉPLOY") == [b["id"], a["id"]]  # case and accents fold
    assert await ids(query="nothing-matches-this") == []
    assert await ids(query='" OR 1=1; --') == []  # a parameter, never SQL or FTS syntax
    assert await ids(query="*") == []  # no word at all: nothing matches
    assert await ids(size=2) == [d["id"], c["id"]]
    assert await ids(size=2, page=1) == [b["id"], a["id"]]
    assert await ids(size=2, page=2) == []


async def test_reactions(http: httpx.AsyncClient, admin: User) -> None:
    general = await general_id(admin)
    chat = await admin.send(general, "react to me")
    erin = await register_and_login(http, "erin")
    path = f"/api/chats/{chat['id']}/reactions"
    thumbs, family = "👍", "👨‍👩‍👧"
    for user, reaction in [(admin, thumbs), (admin, thumbs), (erin, thumbs), (erin, family)]:
        response = await user.post(path, json={"reaction": reaction, "adding": True})
        assert response.status_code == 200 and response.content == b""
    reactions = decode((await admin.get(path)).content, Reactions)
    assert reactions.reactions == {thumbs: 2, family: 1}
    assert reactions.reacting_users == {thumbs: [admin.id, erin.id], family: [erin.id]}
    await erin.post(path, json={"reaction": family, "adding": False})
    assert (await admin.get(f"/api/chats/{chat['id']}")).json()["reactions"] == {thumbs: 2}
    assert_error(await admin.get("/api/chats/99/reactions"), 404)
    assert_error(
        await admin.post("/api/chats/99/reactions", json={"reaction": "x", "adding": True}), 404
    )


async def test_unknown_path_and_method(admin: User) -> None:
    assert_error(await admin.get("/api/nothing"), 404)
    assert_error(await admin.request("PUT", "/api/self"), 405)
